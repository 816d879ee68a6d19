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
// the core's answer into a reused buffer and sends it with an explicit Content-Length, through
// net/http (w) or the fast path's connection (fc), whichever is set.
type writer struct {
	w     nethttp.ResponseWriter
	fc    *fastConn
	buf   []byte
	files []models.TorrentStats
	// sent is set once an answer went to w, so that an error writing it is not answered again.
	sent bool
}

func (w *writer) send() error {
	w.sent = true
	if w.fc != nil {
		w.fc.appendAnswer(w.buf)
		return nil
	}
	h := w.w.Header()
	h["Content-Type"] = textPlain
	h["Cache-Control"] = noCache
	h["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
	w.w.WriteHeader(nethttp.StatusOK)
	_, err := w.w.Write(w.buf)
	return err
}

// WriteAnnounce bencodes resp with its keys in raw-byte order.
func (w *writer) WriteAnnounce(resp *models.AnnounceResponse) error {
	w.buf = appendAnnounce(w.buf[:0], resp)
	return w.send()
}

// WriteScrape bencodes resp. Bencode wants the files dictionary sorted by raw info hash and
// without duplicates, so the writer sorts a copy rather than the core's request-ordered slice.
func (w *writer) WriteScrape(resp *models.ScrapeResponse) error {
	w.files = append(w.files[:0], resp.Files...)
	w.buf = appendScrape(w.buf[:0], w.files)
	return w.send()
}

// writeFailure answers a failure as BitTorrent clients expect it: status 200 and a bencoded
// "failure reason", with the intervals that tell libtorrent when to retry.
func (w *writer) writeFailure(reason string, interval, minInterval time.Duration) error {
	w.buf = appendFailure(w.buf[:0], reason, interval, minInterval)
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
