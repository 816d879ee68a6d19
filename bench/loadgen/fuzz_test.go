package loadgen

import (
	"bytes"
	"io"
	"testing"
)

// FuzzCheckAnnounceBody feeds arbitrary bodies to the bencode walker: it must not panic, must
// accept nothing but a dictionary, and must judge a body the same when it is judged twice.
func FuzzCheckAnnounceBody(f *testing.F) {
	f.Add([]byte("d8:completei1e10:incompletei0e8:intervali1800e5:peers6:abcdefe"))
	f.Add([]byte("d14:failure reason4:nope8:intervali60ee"))
	f.Add([]byte("d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1eeee"))
	f.Add([]byte("d1:ald1:ad1:alleeee"))
	f.Fuzz(func(t *testing.T, body []byte) {
		v, reason := CheckAnnounceBody(body)
		if v != OK && v != Failure && v != Malformed {
			t.Fatalf("verdict %v", v)
		}
		if v != Malformed && (len(body) == 0 || body[0] != 'd' || body[len(body)-1] != 'e') {
			t.Fatalf("accepted %q as a dictionary", body)
		}
		if v == Failure && !bytes.Contains(body, reason) {
			t.Fatalf("reason %q not in the body", reason)
		}
		if v2, _ := CheckAnnounceBody(body); v2 != v {
			t.Fatalf("judged %v then %v", v, v2)
		}
		for n := range 12 {
			if sv, _ := CheckScrapeBody(body, n); sv != Malformed && (len(body) == 0 || body[0] != 'd') {
				t.Fatalf("accepted %q as a scrape answer", body)
			}
		}
	})
}

// FuzzResponseReader reads arbitrary bytes as a stream of HTTP responses: it must not panic,
// every body it returns must lie within the stream and have the length it announced, and it
// must stop.
func FuzzResponseReader(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		rr := NewResponseReader(256)
		src := bytes.NewReader(stream)
		var resp Response
		for range len(stream) + 1 {
			err := rr.Read(src, &resp)
			if err != nil {
				return
			}
			if resp.Status != 200 {
				t.Fatalf("status %d returned without an error", resp.Status)
			}
			if !bytes.Contains(stream, resp.Body) {
				t.Fatalf("body %q not in the stream", resp.Body)
			}
		}
		if src.Len() != 0 || rr.Buffered() {
			t.Fatalf("did not stop: %d bytes left", src.Len())
		}
		if err := rr.Read(src, &resp); err != io.EOF {
			t.Fatalf("after the stream: %v", err)
		}
	})
}

// FuzzCheckUDP judges arbitrary packets as answers to each action: no panic, and an OK answer
// has the length the action's answer must have.
func FuzzCheckUDP(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 2, 127, 0, 0, 1, 0x1a, 0xe1}, 0)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8}, 0)
	f.Add([]byte{0, 0, 0, 3, 0, 0, 0, 9, 'n', 'o'}, 2)
	f.Fuzz(func(t *testing.T, p []byte, n int) {
		n = n & 127
		for _, action := range []uint32{ActionConnect, ActionAnnounce, ActionScrape, ActionError} {
			v, _ := CheckUDP(p, action, n)
			if v != OK {
				continue
			}
			switch action {
			case ActionConnect:
				if len(p) != 16 {
					t.Fatalf("connect answer of %d bytes accepted", len(p))
				}
			case ActionAnnounce:
				if len(p) < 20 || (len(p)-20)%6 != 0 {
					t.Fatalf("announce answer of %d bytes accepted", len(p))
				}
			case ActionScrape:
				if len(p) != 8+12*n {
					t.Fatalf("scrape answer of %d bytes accepted for %d hashes", len(p), n)
				}
				for i := range n {
					ScrapeCounts(p, i)
				}
			default:
				t.Fatalf("action %d accepted", action)
			}
		}
	})
}

// FuzzScrapeFiles feeds arbitrary bodies to the scrape reader: it must not panic, must report
// only non-negative counts under keys found in the body, and must accept
// nothing CheckScrapeBody finds malformed or failed.
func FuzzScrapeFiles(f *testing.F) {
	f.Add([]byte("d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei3e10:downloadedi0e10:incompletei4eeee"))
	f.Add([]byte("d5:filesdee"))
	f.Add([]byte("d5:filesd1:ad8:completei-1e10:incompletei0eeee"))
	f.Add([]byte("d14:failure reason3:no!e"))
	f.Fuzz(func(t *testing.T, body []byte) {
		n := 0
		err := ScrapeFiles(body, func(h []byte, complete, incomplete int64) {
			n++
			if complete < 0 || incomplete < 0 {
				t.Fatalf("negative counts %d, %d", complete, incomplete)
			}
			if !bytes.Contains(body, h) {
				t.Fatalf("hash %q not in the body", h)
			}
		})
		if err == nil {
			if v, _ := CheckScrapeBody(body, n); v != OK {
				t.Fatalf("read %d entries of %q, which CheckScrapeBody judges %v", n, body, v)
			}
		}
	})
}
