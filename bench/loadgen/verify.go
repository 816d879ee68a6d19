package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"time"
)

// verifyBatch is the number of hashes per verifying scrape: fewer than Chihaya's default
// max_scrape_infohashes (74), and a UDP answer of 8+12*50 bytes.
const verifyBatch = 50

// verify scrapes VerifySample torrents, evenly spaced over FillTorrents, and compares their
// seeders and leechers with those a fill of FillPeers sent to each (FillCounts), over UDP or,
// in ModeHTTPVerify, over HTTP (one connection per scrape, with user 0's passkey when
// PrivateUsers is set).
func (r *run) verify(ctx context.Context) (*Result, error) {
	cfg := &r.cfg
	sample := min(cfg.VerifySample, cfg.FillTorrents)
	torrents := make([]int, sample)
	for k := range torrents {
		torrents[k] = k * cfg.FillTorrents / sample
	}
	scrape := r.udpScraper
	if cfg.Mode == ModeHTTPVerify {
		scrape = r.httpScraper
	}
	get, closeFn, err := scrape(ctx)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	vr := &VerifyResult{Torrents: sample}
	for lo := 0; lo < sample; lo += verifyBatch {
		batch := torrents[lo:min(lo+verifyBatch, sample)]
		counts, err := get(batch)
		if err != nil {
			return nil, fmt.Errorf("loadgen: verify: %w", err)
		}
		for j, t := range batch {
			ws, wl := FillCounts(cfg.FillPeers, cfg.FillTorrents, t)
			gs, gl := counts[j][0], counts[j][1]
			vr.WantSeeders += uint64(ws)
			vr.WantLeechers += uint64(wl)
			vr.GotSeeders += gs
			vr.GotLeechers += gl
			if gs != uint64(ws) || gl != uint64(wl) {
				vr.Mismatches++
			}
		}
	}
	vr.Want = vr.WantSeeders + vr.WantLeechers
	vr.Got = vr.GotSeeders + vr.GotLeechers
	return &Result{Mode: cfg.Mode, Verify: vr}, nil
}

// scrapeFunc returns the seeders and leechers of each torrent of a batch.
type scrapeFunc func(torrents []int) ([][2]uint64, error)

// udpScraper scrapes over one UDP socket, retrying a lost answer a few times.
func (r *run) udpScraper(ctx context.Context) (scrapeFunc, func(), error) {
	cfg := &r.cfg
	u, err := dialUDP(0, cfg.Target)
	if err != nil {
		return nil, nil, err
	}
	if err := u.connect(ctx, 5*time.Second); err != nil {
		_ = u.conn.Close()
		return nil, nil, err
	}
	hashes := make([][20]byte, 0, verifyBatch)
	var tx uint32
	get := func(batch []int) ([][2]uint64, error) {
		hashes = hashes[:0]
		for _, t := range batch {
			hashes = append(hashes, InfoHash(t))
		}
		var p []byte
		for try := 0; ; try++ {
			if try == 5 {
				return nil, fmt.Errorf("no scrape answer after %d tries", try)
			}
			tx++
			if _, err := u.conn.Write(AppendUDPScrape(u.out[:0], u.connID, tx, hashes)); err != nil {
				return nil, err
			}
			_ = u.conn.SetReadDeadline(time.Now().Add(cfg.Timeout))
			n, err := u.conn.Read(u.buf)
			if err != nil {
				continue
			}
			if _, id, ok := UDPHeader(u.buf[:n]); !ok || id != tx {
				continue
			}
			p = u.buf[:n]
			break
		}
		if v, _ := CheckUDP(p, ActionScrape, len(hashes)); v != OK {
			return nil, fmt.Errorf("scrape answer %s (%d bytes)", v, len(p))
		}
		out := make([][2]uint64, len(batch))
		for j := range batch {
			seeders, _, leechers := ScrapeCounts(p, j)
			out[j] = [2]uint64{uint64(seeders), uint64(leechers)}
		}
		return out, nil
	}
	return get, func() { _ = u.conn.Close() }, nil
}

// httpScraper scrapes over HTTP, a connection per scrape (opentracker closes every one).
// Torrents missing from an answer count as empty.
func (r *run) httpScraper(context.Context) (scrapeFunc, func(), error) {
	cfg := &r.cfg
	var passkey []byte
	if cfg.PrivateUsers > 0 {
		k := Passkey(0)
		passkey = k[:]
	}
	rr := NewResponseReader(MaxResponse)
	hashes := make([][20]byte, 0, verifyBatch)
	var req []byte
	get := func(batch []int) ([][2]uint64, error) {
		hashes = hashes[:0]
		for _, t := range batch {
			hashes = append(hashes, InfoHash(t))
		}
		req = AppendScrapeAt(req[:0], cfg.Target, passkey, hashes, true)
		c, err := net.DialTimeout("tcp", cfg.Target, cfg.Timeout)
		if err != nil {
			return nil, err
		}
		defer closeAbort(c)
		_ = c.SetDeadline(time.Now().Add(cfg.Timeout))
		if _, err := c.Write(req); err != nil {
			return nil, err
		}
		rr.Reset()
		var resp Response
		if err := rr.Read(c, &resp); err != nil {
			return nil, err
		}
		out := make([][2]uint64, len(batch))
		err = ScrapeFiles(resp.Body, func(h []byte, complete, incomplete int64) {
			for j := range hashes {
				if bytes.Equal(hashes[j][:], h) {
					out[j] = [2]uint64{uint64(complete), uint64(incomplete)}
				}
			}
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	return get, func() {}, nil
}
