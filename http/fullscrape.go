package http

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	nethttp "net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/http/bencode"
	"github.com/chihaya/chihaya/tracker"
)

// fullScrape answers scrapes without info_hash with every torrent the tracker serves. The
// answer is built at most once per interval, gzipped, and kept: a thousand full scrapes in an
// interval cost one build. Clients that accept gzip get the kept bytes; others get them
// inflated as they are sent.
type fullScrape struct {
	tkr      *tracker.Tracker
	interval time.Duration

	// mu is held while a body is built, so that requests meanwhile wait for it rather than
	// build their own.
	mu    sync.Mutex
	built time.Time
	gz    []byte
	size  int // the inflated body's length
}

// body returns the current gzipped body and its inflated length, building it if it is older
// than the interval.
func (f *fullScrape) body(ctx context.Context) ([]byte, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gz != nil && time.Since(f.built) < f.interval {
		return f.gz, f.size, nil
	}
	start := time.Now()
	all, err := f.tkr.AllTorrents(ctx)
	if err != nil {
		return nil, 0, err
	}
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	buf := make([]byte, 0, 1<<16)
	buf = bencode.AppendDictStart(buf)
	buf = bencode.AppendString(buf, "files")
	buf = bencode.AppendDictStart(buf)
	size := 0
	for i := range all {
		buf = appendFile(buf, &all[i])
		if len(buf) >= 1<<16-128 {
			size += len(buf)
			_, _ = zw.Write(buf)
			buf = buf[:0]
		}
	}
	buf = bencode.AppendEnd(bencode.AppendEnd(buf))
	size += len(buf)
	_, _ = zw.Write(buf)
	if err := zw.Close(); err != nil {
		return nil, 0, fmt.Errorf("http: full scrape: %w", err)
	}
	f.gz, f.size, f.built = out.Bytes(), size, time.Now()
	if glog.V(1) {
		glog.Infof("http: full scrape of %d torrents built in %s: %d bytes, %d gzipped",
			len(all), time.Since(start).Round(time.Millisecond), size, len(f.gz))
	}
	return f.gz, f.size, nil
}

// serve answers one full scrape.
func (f *fullScrape) serve(w nethttp.ResponseWriter, r *nethttp.Request) error {
	gz, size, err := f.body(r.Context())
	if err != nil {
		return err
	}
	h := w.Header()
	h["Content-Type"] = textPlain
	h.Set("Vary", "Accept-Encoding")
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(gz)))
		_, err = w.Write(gz)
		return err
	}
	h.Set("Content-Length", strconv.Itoa(size))
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return err
	}
	_, err = io.Copy(w, zr)
	return err
}

// acceptsGzip reports whether Accept-Encoding values take gzip (with a q above 0).
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
				if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
					return false
				}
			}
			return true
		}
	}
	return false
}
