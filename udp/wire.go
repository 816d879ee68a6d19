package udp

import (
	"encoding/binary"
	"math"
	"net/netip"
	"time"

	"github.com/chihaya/chihaya/tracker/models"
)

// protocolID is the magic number a connect request carries where other requests carry their
// connection ID.
const protocolID uint64 = 0x41727101980

// The actions of BEP 15.
const (
	actionConnect  uint32 = 0
	actionAnnounce uint32 = 1
	actionScrape   uint32 = 2
	actionError    uint32 = 3
)

// Sizes of the fixed parts of the packets.
const (
	headerLen      = 16 // connection ID, action, transaction ID
	announceLen    = 98 // an announce request up to its BEP 41 options
	connectRespLen = 16
	announceHdrLen = 20 // an announce answer up to its peers
	errorHdrLen    = 8
	infoHashLen    = 20
)

// MaxScrapeInfoHashes is the most info hashes one UDP scrape may ask about: 74 hashes make a
// 1496-byte request, which fits an Ethernet MTU (BEP 15).
const MaxScrapeInfoHashes = 74

// maxDatagram is the largest UDP payload over IPv4; answers are never larger.
const maxDatagram = 65507

// The BEP 41 option types.
const (
	optionEnd     = 0x0
	optionNOP     = 0x1
	optionURLData = 0x2
)

// header is the start of every request.
type header struct {
	connID uint64
	action uint32
	txID   uint32
}

// parseHeader reads the 16-byte header of b; ok is false when b is shorter.
func parseHeader(b []byte) (h header, ok bool) {
	if len(b) < headerLen {
		return h, false
	}
	return header{
		connID: binary.BigEndian.Uint64(b[0:8]),
		action: binary.BigEndian.Uint32(b[8:12]),
		txID:   binary.BigEndian.Uint32(b[12:16]),
	}, true
}

// parseAnnounce fills a from the fixed fields of the announce request b, which must hold at
// least announceLen bytes. It sets the endpoint's port only: its address and the IP field's use
// depend on the socket and the configuration. It returns the IP field (0: none given).
func parseAnnounce(b []byte, a *models.Announce) (ip [4]byte, err error) {
	*a = models.Announce{Compact: true, CompactOne: true}
	if len(b) < announceLen {
		return ip, models.ErrMalformedRequest
	}
	copy(a.InfoHash[:], b[16:36])
	copy(a.PeerID[:], b[36:56])
	a.Downloaded = int64(binary.BigEndian.Uint64(b[56:64]))
	a.Left = int64(binary.BigEndian.Uint64(b[64:72]))
	a.Uploaded = int64(binary.BigEndian.Uint64(b[72:80]))
	if a.Downloaded < 0 || a.Uploaded < 0 {
		return ip, models.ErrInvalidNumber
	}
	if a.Left < 0 {
		// Some clients send -1 while they do not know the torrent's size (a magnet link
		// without metadata): a leecher of unknown progress, as anacrolix's HTTP client says it.
		a.Left = math.MaxInt64
	}
	switch binary.BigEndian.Uint32(b[80:84]) {
	case 0:
		a.Event = models.None
	case 1:
		a.Event = models.Completed
	case 2:
		a.Event = models.Started
	case 3:
		a.Event = models.Stopped
	case 4:
		// Not in BEP 15; bittorrent-tracker and WebTorrent send it for BEP 21's paused.
		a.Event = models.Paused
	default:
		return ip, models.ErrInvalidEvent
	}
	copy(ip[:], b[84:88])
	// 88: the key, which the core has no use for: a peer is its peer ID and address family.
	a.NumWant = int(int32(binary.BigEndian.Uint32(b[92:96])))
	if a.NumWant < 0 {
		a.NumWant = -1
	}
	port := binary.BigEndian.Uint16(b[96:98])
	if port == 0 {
		return ip, models.ErrInvalidPort
	}
	a.Endpoint = netip.AddrPortFrom(netip.Addr{}, port)
	return ip, nil
}

// parseOptions appends to dst the URLData of the BEP 41 options in b (what follows the fixed
// part of an announce), its pieces concatenated. Options end at an EndOfOptions byte or at the
// end of b; unknown types carry a length and are skipped. An option whose length runs past the
// end of b is malformed.
func parseOptions(b, dst []byte) ([]byte, error) {
	for i := 0; i < len(b); {
		switch t := b[i]; t {
		case optionEnd:
			return dst, nil
		case optionNOP:
			i++
		default:
			if i+1 >= len(b) {
				return dst, models.ErrMalformedRequest
			}
			n := int(b[i+1])
			if i+2+n > len(b) {
				return dst, models.ErrMalformedRequest
			}
			if t == optionURLData {
				dst = append(dst, b[i+2:i+2+n]...)
			}
			i += 2 + n
		}
	}
	return dst, nil
}

// passkeyOf returns the passkey in URLData, the path and query of the tracker URL: "p" of
// "/p/announce", "/p/" or "/p", with any "?query" after it. It returns nil for "", "/",
// "/announce" and any other shape.
func passkeyOf(url []byte) []byte {
	for i, c := range url {
		if c == '?' {
			url = url[:i]
			break
		}
	}
	if len(url) == 0 || url[0] != '/' {
		return nil
	}
	path := url[1:]
	end := len(path)
	for i, c := range path {
		if c == '/' {
			end = i
			break
		}
	}
	key, rest := path[:end], path[end:]
	if len(key) == 0 || string(key) == "announce" {
		return nil
	}
	switch string(rest) {
	case "", "/", "/announce":
		return key
	}
	return nil
}

// parseScrape appends the info hashes of the scrape request b to dst, in request order. Bytes
// after the last whole hash are ignored (BEP 15 lets packets grow). More than limit hashes is
// an error.
func parseScrape(b []byte, dst []models.InfoHash, limit int) ([]models.InfoHash, error) {
	if len(b) < headerLen {
		return dst, models.ErrMalformedRequest
	}
	n := (len(b) - headerLen) / infoHashLen
	if n == 0 {
		return dst, models.ErrMissingInfoHash
	}
	if n > limit {
		return dst, models.ErrTooManyInfoHashes
	}
	for i := 0; i < n; i++ {
		off := headerLen + i*infoHashLen
		dst = append(dst, models.InfoHash(b[off:off+infoHashLen]))
	}
	return dst, nil
}

func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// clamp32 bounds a count or a number of seconds to what the packet's i32 can hold.
func clamp32(n int64) uint32 {
	switch {
	case n < 0:
		return 0
	case n > math.MaxInt32:
		return math.MaxInt32
	}
	return uint32(n)
}

// appendConnect appends a connect answer.
func appendConnect(b []byte, txID uint32, connID uint64) []byte {
	b = appendU32(b, actionConnect)
	b = appendU32(b, txID)
	return binary.BigEndian.AppendUint64(b, connID)
}

// appendError appends an error packet with msg. When limit is positive, the packet is cut to
// limit bytes (at least its 8-byte header), so that an unauthenticated request never gets an
// answer larger than itself.
func appendError(b []byte, txID uint32, msg string, limit int) []byte {
	if limit > 0 {
		if room := max(limit-errorHdrLen, 0); len(msg) > room {
			msg = msg[:room]
		}
	}
	b = appendU32(b, actionError)
	b = appendU32(b, txID)
	return append(b, msg...)
}

// appendAnnounce appends an announce answer: interval, leechers, seeders, then the peers of
// the requester's family, 6 bytes each for IPv4 and 18 for IPv6, as many as fit a datagram.
func appendAnnounce(b []byte, txID uint32, r *models.AnnounceResponse, v6 bool) []byte {
	b = appendU32(b, actionAnnounce)
	b = appendU32(b, txID)
	b = appendU32(b, clamp32(int64(r.Interval/time.Second)))
	b = appendU32(b, clamp32(int64(r.Incomplete)))
	b = appendU32(b, clamp32(int64(r.Complete)))
	if v6 {
		room := (maxDatagram - announceHdrLen) / 18
		for _, p := range r.IPv6Peers {
			if room == 0 {
				break
			}
			if a := p.AddrPort.Addr(); a.Is6() && !a.Is4In6() {
				a16 := a.As16()
				b = append(b, a16[:]...)
				b = binary.BigEndian.AppendUint16(b, p.AddrPort.Port())
				room--
			}
		}
		return b
	}
	room := (maxDatagram - announceHdrLen) / 6
	for _, p := range r.IPv4Peers {
		if room == 0 {
			break
		}
		if a := p.AddrPort.Addr(); a.Is4() {
			a4 := a.As4()
			b = append(b, a4[:]...)
			b = binary.BigEndian.AppendUint16(b, p.AddrPort.Port())
			room--
		}
	}
	return b
}

// appendScrape appends a scrape answer: seeders, completed and leechers of each torrent, in
// request order.
func appendScrape(b []byte, txID uint32, files []models.TorrentStats) []byte {
	b = appendU32(b, actionScrape)
	b = appendU32(b, txID)
	for i := range files {
		f := &files[i]
		b = appendU32(b, clamp32(int64(f.Seeders)))
		b = appendU32(b, clamp32(int64(f.Snatches)))
		b = appendU32(b, clamp32(int64(f.Leechers)))
	}
	return b
}
