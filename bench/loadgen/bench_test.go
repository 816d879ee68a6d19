package loadgen

import (
	"bytes"
	"strconv"
	"testing"
	"time"
)

// The generator shares the machine with the tracker it measures: what it spends per request
// is spent on the other core, so its hot paths must not allocate.

func BenchmarkAppendAnnounce(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 1024)
	a := AnnounceParams{InfoHash: InfoHash(1), PeerID: PeerID(2), Port: 6881, Left: 1000, Event: "started", NumWant: 30}
	for b.Loop() {
		buf = AppendAnnounce(buf[:0], "127.0.0.1:6881", &a, false)
	}
}

func BenchmarkAppendUDPAnnounce(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 128)
	a := UDPAnnounce{ConnID: 1, TxID: 2, InfoHash: InfoHash(1), PeerID: PeerID(2), Port: 6881, NumWant: 30}
	for b.Loop() {
		buf = AppendUDPAnnounce(buf[:0], &a)
	}
}

func BenchmarkReadAndCheckAnnounce(b *testing.B) {
	b.ReportAllocs()
	body := "d8:completei5e10:downloadedi0e10:incompletei9e8:intervali1800e12:min intervali900e5:peers180:" +
		string(bytes.Repeat([]byte{127, 0, 0, 1, 0x1a, 0xe1}, 30)) + "e"
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	rr := NewResponseReader(MaxResponse)
	src := bytes.NewReader(resp)
	var r Response
	for b.Loop() {
		src.Reset(resp)
		rr.Reset()
		if err := rr.Read(src, &r); err != nil {
			b.Fatal(err)
		}
		if v, _ := CheckAnnounceBody(r.Body); v != OK {
			b.Fatal(v)
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	b.ReportAllocs()
	var h Histogram
	d := int64(1)
	for b.Loop() {
		h.Record(time.Duration(d))
		d = (d*7 + 1) & (1<<30 - 1)
	}
}
