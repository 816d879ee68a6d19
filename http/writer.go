package http

import (
	"bytes"
	nethttp "net/http"
	"slices"
	"strconv"
	"time"

	"github.com/chihaya/chihaya/http/bencode"
	"github.com/chihaya/chihaya/tracker/models"
)

var (
	textPlain = []string{"text/plain"}
	noCache   = []string{"no-cache"}
)

// writer is the HTTP frontend's tracker.AnnounceWriter and tracker.ScrapeWriter: it bencodes
// the core's answer, or a failure, into buf[start:], its one sink. On net/http's path buf is
// the writer's own and start 0, and writeTo sends the body; on the fast path buf is the
// connection's output, with the answers before this one in buf[:start] (Server.ServeFast),
// and the fast path puts the head in front of the body.
type writer struct {
	buf   []byte
	start int
	files []models.TorrentStats
	// ready is set once buf holds the request's answer, so that a request is answered once.
	ready bool
}

// reset readies w for the next request.
func (w *writer) reset() { w.buf, w.start, w.ready = w.buf[:0], 0, false }

// body is the answer made so far.
func (w *writer) body() []byte { return w.buf[w.start:] }

func (w *writer) send() error {
	w.ready = true
	return nil
}

// writeTo sends the answer through net/http: status 200 with an explicit Content-Length.
func (w *writer) writeTo(rw nethttp.ResponseWriter) error {
	h := rw.Header()
	h["Content-Type"] = textPlain
	h["Cache-Control"] = noCache
	h["Content-Length"] = []string{strconv.Itoa(len(w.body()))}
	rw.WriteHeader(nethttp.StatusOK)
	_, err := rw.Write(w.body())
	return err
}

// WriteAnnounce bencodes resp with its keys in raw-byte order.
func (w *writer) WriteAnnounce(resp *models.AnnounceResponse) error {
	w.buf = appendAnnounce(w.buf[:w.start], resp)
	return w.send()
}

// WriteScrape bencodes resp. Bencode wants the files dictionary sorted by raw info hash and
// without duplicates, so the writer sorts a copy rather than the core's request-ordered slice.
func (w *writer) WriteScrape(resp *models.ScrapeResponse) error {
	w.files = append(w.files[:0], resp.Files...)
	w.buf = appendScrape(w.buf[:w.start], w.files)
	return w.send()
}

// writeFailure answers a failure as BitTorrent clients expect it: status 200 and a bencoded
// "failure reason", with the intervals that tell libtorrent when to retry.
func (w *writer) writeFailure(reason string, interval, minInterval time.Duration) error {
	w.buf = appendFailure(w.buf[:w.start], reason, interval, minInterval)
	return w.send()
}

func appendFailure(b []byte, reason string, interval, minInterval time.Duration) []byte {
	b = bencode.AppendDictStart(b)
	b = bencode.AppendString(b, "failure reason")
	b = bencode.AppendString(b, reason)
	b = bencode.AppendString(b, "interval")
	b = bencode.AppendInt(b, int64(interval/time.Second))
	b = bencode.AppendString(b, "min interval")
	b = bencode.AppendInt(b, int64(minInterval/time.Second))
	return bencode.AppendEnd(b)
}

func appendAnnounce(b []byte, r *models.AnnounceResponse) []byte {
	b = bencode.AppendDictStart(b)
	b = bencode.AppendString(b, "complete")
	b = bencode.AppendInt(b, int64(r.Complete))
	b = bencode.AppendString(b, "downloaded")
	b = bencode.AppendInt(b, int64(r.Downloaded))
	if r.ExternalIP.IsValid() {
		b = bencode.AppendString(b, "external ip")
		if ip := r.ExternalIP.Unmap(); ip.Is4() {
			a := ip.As4()
			b = bencode.AppendBytes(b, a[:])
		} else {
			a := ip.As16()
			b = bencode.AppendBytes(b, a[:])
		}
	}
	b = bencode.AppendString(b, "incomplete")
	b = bencode.AppendInt(b, int64(r.Incomplete))
	b = bencode.AppendString(b, "interval")
	b = bencode.AppendInt(b, int64(r.Interval/time.Second))
	b = bencode.AppendString(b, "min interval")
	b = bencode.AppendInt(b, int64(r.MinInterval/time.Second))
	b = bencode.AppendString(b, "peers")
	if r.Compact {
		b = bencode.AppendStringHeader(b, 6*len(r.IPv4Peers))
		for _, p := range r.IPv4Peers {
			a := p.AddrPort.Addr().As4()
			b = append(b, a[:]...)
			b = append(b, byte(p.AddrPort.Port()>>8), byte(p.AddrPort.Port()))
		}
		if len(r.IPv6Peers) > 0 {
			b = bencode.AppendString(b, "peers6")
			b = bencode.AppendStringHeader(b, 18*len(r.IPv6Peers))
			for _, p := range r.IPv6Peers {
				a := p.AddrPort.Addr().As16()
				b = append(b, a[:]...)
				b = append(b, byte(p.AddrPort.Port()>>8), byte(p.AddrPort.Port()))
			}
		}
	} else {
		b = bencode.AppendListStart(b)
		b = appendDictPeers(b, r.IPv4Peers, r.NoPeerID)
		b = appendDictPeers(b, r.IPv6Peers, r.NoPeerID)
		b = bencode.AppendEnd(b)
	}
	return bencode.AppendEnd(b)
}

// appendDictPeers writes BEP 3 dictionary-model peers: {ip, peer id, port}, keys in raw order.
func appendDictPeers(b []byte, peers []models.Peer, noPeerID bool) []byte {
	for _, p := range peers {
		b = bencode.AppendDictStart(b)
		b = bencode.AppendString(b, "ip")
		var text [64]byte
		b = bencode.AppendBytes(b, p.AddrPort.Addr().AppendTo(text[:0]))
		if !noPeerID {
			b = bencode.AppendString(b, "peer id")
			b = bencode.AppendBytes(b, p.ID[:])
		}
		b = bencode.AppendString(b, "port")
		b = bencode.AppendInt(b, int64(p.AddrPort.Port()))
		b = bencode.AppendEnd(b)
	}
	return b
}

// appendScrape sorts files in place by info hash and writes them, each hash once.
func appendScrape(b []byte, files []models.TorrentStats) []byte {
	slices.SortFunc(files, func(x, y models.TorrentStats) int {
		return bytes.Compare(x.InfoHash[:], y.InfoHash[:])
	})
	b = bencode.AppendDictStart(b)
	b = bencode.AppendString(b, "files")
	b = bencode.AppendDictStart(b)
	for i := range files {
		f := &files[i]
		if i > 0 && f.InfoHash == files[i-1].InfoHash {
			continue
		}
		b = appendFile(b, f)
	}
	b = bencode.AppendEnd(b)
	return bencode.AppendEnd(b)
}

// appendFile writes one torrent's entry of a scrape's files dictionary.
func appendFile(b []byte, f *models.TorrentStats) []byte {
	b = bencode.AppendBytes(b, f.InfoHash[:])
	b = bencode.AppendDictStart(b)
	b = bencode.AppendString(b, "complete")
	b = bencode.AppendInt(b, int64(f.Seeders))
	b = bencode.AppendString(b, "downloaded")
	b = bencode.AppendInt(b, int64(f.Snatches))
	b = bencode.AppendString(b, "incomplete")
	b = bencode.AppendInt(b, int64(f.Leechers))
	return bencode.AppendEnd(b)
}
