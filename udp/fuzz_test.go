package udp

import (
	"encoding/binary"
	"testing"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// Fuzz flags: which server answers and how.
const (
	fuzzAuthenticate = 1 << iota // overwrite the connection ID with a valid one
	fuzzIPv6                     // the datagram comes over IPv6
	fuzzPrivate                  // a private-mode server
	fuzzSpoofing                 // allow_ip_spoofing
	fuzzOversized                // the datagram was longer than the read buffer
)

// FuzzParse feeds arbitrary datagrams through the whole answering path (parse, core, encode)
// of public and private servers. Whatever the bytes, the answer is silence or a well-formed
// packet that echoes the transaction ID, an unauthenticated request never gets an answer larger
// than itself, and nothing panics (a panic would be answered as an internal error, which the
// memory driver never causes). The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	envs := map[uint8]*env{}
	for _, fl := range []uint8{0, fuzzPrivate, fuzzSpoofing, fuzzPrivate | fuzzSpoofing} {
		envs[fl] = newEnv(f, func(c *config.Config) {
			c.PrivateEnabled = fl&fuzzPrivate != 0
			c.AllowIPSpoofing = fl&fuzzSpoofing != 0
		})
	}
	// A few seeds beside the corpus files, so that `go test` without testdata still covers
	// every action.
	f.Add(connectPacket(1), uint8(0))
	f.Add(announcePacket(0, 2, ann{infoHash: hashOf("h"), peerID: "p", port: 1}, urlData("/"+testPasskey+"/announce")...), uint8(fuzzAuthenticate|fuzzPrivate))
	f.Add(scrapePacket(0, 3, hashOf("a"), hashOf("b")), uint8(fuzzAuthenticate|fuzzIPv6))

	f.Fuzz(func(t *testing.T, pkt []byte, flags uint8) {
		e := envs[flags&(fuzzPrivate|fuzzSpoofing)]
		from := v4Client
		if flags&fuzzIPv6 != 0 {
			from = v6Client
		}
		req := append([]byte(nil), pkt...)
		authenticated := false
		if flags&fuzzAuthenticate != 0 && len(req) >= 8 {
			binary.BigEndian.PutUint64(req, e.connID(from))
			authenticated = true
		}
		oversized := flags&fuzzOversized != 0
		resp := e.w.handle(req, from, oversized, nil)

		// The parsers on their own never panic either.
		if len(req) >= announceLen {
			var a models.Announce
			_, _ = parseAnnounce(req, &a)
			url, _ := parseOptions(req[announceLen:], nil)
			_ = passkeyOf(url)
		}
		_ = passkeyOf(req)
		_, _ = parseScrape(req, nil, MaxScrapeInfoHashes)

		if len(req) < headerLen {
			if len(resp) != 0 {
				t.Fatalf("%d-byte packet answered with %x", len(req), resp)
			}
			return
		}
		if len(resp) < errorHdrLen {
			t.Fatalf("answer of %d bytes: %x", len(resp), resp)
		}
		action := binary.BigEndian.Uint32(resp)
		if tx := binary.BigEndian.Uint32(resp[4:]); tx != binary.BigEndian.Uint32(req[12:]) {
			t.Fatalf("transaction ID %#x, want %#x", tx, binary.BigEndian.Uint32(req[12:]))
		}
		reqAction := binary.BigEndian.Uint32(req[8:])
		switch {
		case action == actionError:
			if msg := string(resp[8:]); msg == string(models.ErrInternal) {
				t.Fatalf("internal error (a panic?) answering %x with flags %#x", req, flags)
			}
		case action != reqAction:
			t.Fatalf("answer action %d to request action %d", action, reqAction)
		case action == actionConnect && len(resp) != connectRespLen:
			t.Fatalf("connect answer of %d bytes", len(resp))
		}
		if !authenticated || (reqAction != actionAnnounce && reqAction != actionScrape) {
			if len(resp) > len(req) {
				t.Fatalf("unauthenticated %d-byte request answered with %d bytes", len(req), len(resp))
			}
		}
	})
}
