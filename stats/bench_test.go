package stats_test

import (
	"context"
	"encoding/binary"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

const (
	benchTorrents = 1000
	benchPeers    = 20
	benchRequests = 256
)

// BenchmarkAnnounce measures one re-announce through the HTTP frontend's handler into a warm
// memory swarm, without and with a running stats aggregator recording it.
func BenchmarkAnnounce(b *testing.B) {
	for _, withStats := range []bool{false, true} {
		name := "stats=off"
		if withStats {
			name = "stats=on"
		}
		b.Run(name, func(b *testing.B) { benchAnnounce(b, withStats) })
	}
}

func benchInfoHash(t int) models.InfoHash {
	var ih models.InfoHash
	// The memory driver shards by the first four bytes: spread the torrents over the shards.
	binary.BigEndian.PutUint32(ih[:4], uint32(t)*2654435761)
	binary.BigEndian.PutUint32(ih[16:], uint32(t))
	return ih
}

func benchPeerID(t, p int) models.PeerID {
	var id models.PeerID
	copy(id[:], fmt.Sprintf("-BN0001-%06d%06d", t, p))
	return id
}

func benchEndpoint(t, p int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(t >> 8), byte(t), byte(p + 1)}), 6881)
}

type discardAnnounce struct{}

func (discardAnnounce) WriteAnnounce(*models.AnnounceResponse) error { return nil }

// benchWriter is a minimal reusable ResponseWriter: it keeps the headers and counts the body.
type benchWriter struct {
	h    nethttp.Header
	code int
	n    int
}

func (w *benchWriter) Header() nethttp.Header { return w.h }

func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = nethttp.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

func (w *benchWriter) reset() {
	clear(w.h)
	w.code, w.n = 0, 0
}

func benchAnnounce(b *testing.B, withStats bool) {
	cfg := config.Default()
	tkr, err := tracker.New(&cfg, memory.NewPool(memory.DefaultShards), noop.Conn{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for t := 0; t < benchTorrents; t++ {
		for p := 0; p < benchPeers; p++ {
			ep := benchEndpoint(t, p)
			a := models.Announce{
				InfoHash: benchInfoHash(t),
				PeerID:   benchPeerID(t, p),
				Endpoint: ep,
				Remote:   ep.Addr(),
				Event:    models.Started,
				Left:     int64(p % 2), // half seeders, half leechers
				Compact:  true,
			}
			if err := tkr.HandleAnnounce(ctx, &a, discardAnnounce{}); err != nil {
				b.Fatal(err)
			}
		}
	}

	var opts []http.Option
	var st *stats.Stats
	if withStats {
		st = stats.New(&cfg, tkr)
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			st.Run(runCtx)
		}()
		b.Cleanup(func() {
			cancel()
			<-done
		})
		opts = append(opts, http.WithRecorder(st))
	}
	srv, err := http.NewServer(&cfg, tkr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()

	// Re-announces of existing peers, spread over the torrents, from the peers' own addresses.
	reqs := make([]*nethttp.Request, benchRequests)
	for i := range reqs {
		t, p := (i*7919)%benchTorrents, i%benchPeers
		ih, id, ep := benchInfoHash(t), benchPeerID(t, p), benchEndpoint(t, p)
		q := "info_hash=" + escape(string(ih[:])) + "&peer_id=" + escape(string(id[:])) +
			fmt.Sprintf("&port=%d&uploaded=%d&downloaded=0&left=%d&compact=1", ep.Port(), i, p%2)
		r, err := nethttp.NewRequest(nethttp.MethodGet, "http://tracker.example/announce?"+q, nil)
		if err != nil {
			b.Fatal(err)
		}
		r.RemoteAddr = ep.String()
		reqs[i] = r
	}
	// The requests must be real, successful announces.
	for _, r := range reqs[:4] {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.String()
		if rec.Code != nethttp.StatusOK || !strings.HasPrefix(body, "d8:complete") || strings.Contains(body, "failure reason") {
			b.Fatalf("announce answered %d %q", rec.Code, body)
		}
	}

	w := &benchWriter{h: make(nethttp.Header, 4)}
	var dropped uint64
	if st != nil {
		dropped = st.Dropped()
	}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	n := 0
	for ; b.Loop(); n++ {
		i := n
		w.reset()
		h.ServeHTTP(w, reqs[i%len(reqs)])
		if w.code != nethttp.StatusOK || w.n == 0 {
			b.Fatalf("announce answered %d with %d bytes", w.code, w.n)
		}
	}
	// Wall time per op hides work done on the other core (the aggregator); the process's CPU
	// time per op counts it, and is the fair cost of stats on a machine with spare cores.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(n), "cpu-ns/op")
	if st != nil {
		b.ReportMetric(float64(st.Dropped()-dropped)/float64(n), "drops/op")
	}
}

// processCPU returns the user and system CPU time this process has used, in nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
