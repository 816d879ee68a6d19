package ws

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/http/fast"
	"github.com/chihaya/chihaya/tracker/models"
)

// A socket is read in one of two ways:
//
//   - polled (a plain TCP socket, on Linux): no goroutine waits on it. The server's poller
//     (poll_linux.go) watches it; when it is readable one of the poller's reader goroutines
//     reads what is there and handles every whole message. An idle socket holds its conn and
//     no buffer.
//   - on a goroutine of its own (a socket under TLS, or no poller), which blocks in Read.
//
// Writes are the same for both: frames queue in the socket's buffer (bounded by ws_send_queue
// messages); the sockets a wakeup queued frames to are written once each at its end, every
// frame queued meanwhile in one write. The wakeups of polled sockets the poller found ready
// together are one batch (batch.go), written at the end of its last one. A polled socket is
// written without blocking by whoever flushes it; only what the socket cannot take at once
// goes to a goroutine that waits.

// The states of a socket's writing.
const (
	writeIdle      = iota // nothing queued, or nothing more to write
	writeScheduled        // frames queued; a wakeup will flush them at its end
	writeBusy             // a flush is writing
)

// joined is a torrent a connection announced: the peer ID it announced under and its last
// counters, which an answer message (which carries none) repeats.
type joined struct {
	ih         models.InfoHash
	id         models.PeerID
	seeder     bool
	registered bool // in the index
	up, down   int64
}

// conn is one WebSocket.
type conn struct {
	s *Server
	// nc is the socket read on a goroutine; of a polled socket, only what counts it in the
	// HTTP frontend's connection budget until its Close.
	nc        net.Conn
	remote    netip.Addr
	passkey   string
	userAgent string

	// The reader's own state: one reader at a time.
	joined []joined
	in     *[]byte // bytes read and not yet handled: a partial frame (nil when none, if polled)
	frames frameReader

	// lastHeard is when the last message or pong came, in the server's clock: the keeper
	// closes a socket silent for ws_idle_timeout. lastPing is only the keeper's.
	lastHeard atomic.Int64
	lastPing  int64

	// stalledAt is when a polled socket's writer began to wait for room (0: it is not waiting):
	// the keeper closes a socket that takes nothing for writeTimeout.
	stalledAt atomic.Int64
	finished  atomic.Bool

	mu      sync.Mutex
	out     *[]byte // frames to write (from framePool), nil when none
	queued  int     // messages in out
	state   uint8   // writeIdle, writeScheduled, writeBusy
	dead    bool    // closed, or closing
	closing bool    // a close frame is queued: close the socket once it is written
	// fullQueued counts the full scrape answers queued (fullscrape.go), whose slots go once the
	// queue is written.
	fullQueued int32
	// A polled socket's own: its descriptor (-1 once closed), whether a goroutine reads it and
	// whether it turned readable again meanwhile, and the frames a write left (pending, from
	// pendingOff on) while its writer waits for room (wantWrite), or whether room came while
	// no writer waited (canWrite).
	polled     bool
	reading    bool
	more       bool
	wantWrite  bool
	canWrite   bool
	fd         int
	pending    *[]byte
	pendingOff int
	slot, gen  uint32 // in the poller
}

// scratch is what handling messages needs: taken from the server's pool for one wakeup of a
// socket (one or more messages) and put back after it, so that an idle socket holds none of it.
type scratch struct {
	s      *Server
	ctx    *fast.RequestContext // the context of the core's calls, request_timeout each
	rq     request
	a      models.Announce
	ih     models.InfoHash
	id, to models.PeerID
	picked []member
	msg    []byte // a message being built
	resp   models.AnnounceResponse
	files  []models.TorrentStats
	hashes []models.InfoHash
	// flush holds the sockets frames were queued to during this wakeup, written at its end.
	flush []*conn
}

// getScratch takes a scratch from the server's pool.
func (s *Server) getScratch() *scratch {
	if sc, ok := s.scratch.Get().(*scratch); ok {
		return sc
	}
	return &scratch{s: s, ctx: fast.NewRequestContext(s.base, s.reqTimeout)}
}

// WriteAnnounce keeps the core's counts for the answer, which is written after the announce.
func (sc *scratch) WriteAnnounce(resp *models.AnnounceResponse) error {
	sc.resp.Complete, sc.resp.Incomplete = resp.Complete, resp.Incomplete
	return nil
}

// WriteScrape keeps the core's counts for the answer.
func (sc *scratch) WriteScrape(resp *models.ScrapeResponse) error {
	sc.files = append(sc.files[:0], resp.Files...)
	return nil
}

// flushAll writes the sockets this wakeup queued frames to.
func (sc *scratch) flushAll() {
	for i, c := range sc.flush {
		c.flush()
		sc.flush[i] = nil
	}
	sc.flush = sc.flush[:0]
}

// release puts sc back, keeping what a next wakeup may reuse unless it grew large.
func (sc *scratch) release() {
	sc.rq.reset()
	clear(sc.picked)
	sc.picked = sc.picked[:0]
	if cap(sc.msg) > maxPooledFrames {
		sc.msg = nil
	}
	if cap(sc.rq.Offers) > 1024 {
		sc.rq.Offers = nil
	}
	sc.files = sc.files[:0]
	sc.hashes = sc.hashes[:0]
	sc.s.scratch.Put(sc)
}

// Buffers: only sockets being read or written hold one.
var (
	// readPool holds the buffers sockets are read into.
	readPool = sync.Pool{New: func() any { b := make([]byte, 0, readBufferSize); return &b }}
	// framePool holds the buffers frames queue in.
	framePool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
)

// readBufferSize is the size of the buffers sockets are read into; a longer frame is read into
// a buffer of its own size.
const readBufferSize = 16 << 10

// maxPooledFrames is the largest buffer put back in framePool or kept in a scratch.
const maxPooledFrames = 256 << 10

func putFrames(bp *[]byte) {
	if cap(*bp) <= maxPooledFrames {
		*bp = (*bp)[:0]
		framePool.Put(bp)
	}
}

func putRead(bp *[]byte) {
	if cap(*bp) == readBufferSize {
		*bp = (*bp)[:0]
		readPool.Put(bp)
	}
}

// readable runs when the poller finds the socket readable, as one of the poller's batch b: it
// reads what is there and handles every whole message, whose frames b writes at its end; then
// again as long as the poller finds more, each time writing what that queued itself.
func (c *conn) readable(b *batch) {
	for {
		sc := c.s.getScratch()
		var ok, drained bool
		if b != nil {
			// A socket that holds more than batchReads fill its share of the batch, and is
			// read on after it: a client that sends without end cannot hold up the batch.
			ok, drained = c.readPolled(sc, batchReads)
			b.join(sc)
			b.done()
			b = nil
		} else {
			ok, drained = c.readPolled(sc, 0)
			sc.flushAll()
		}
		sc.release()
		if ok && drained && c.in != nil {
			// An idle socket keeps no buffer, only the bytes of a frame not whole yet.
			b := *c.in
			putRead(c.in)
			c.in = nil
			if len(b) > 0 {
				kept := bytes.Clone(b)
				c.in = &kept
			}
		}
		c.mu.Lock()
		more := ok && !c.dead && (c.more || !drained)
		c.more = false
		if !more {
			c.reading = false
		}
		dead := c.dead
		c.mu.Unlock()
		if !ok || dead {
			c.finish()
			return
		}
		if !more {
			return
		}
	}
}

// batchReads is how many reads that fill the buffer a socket has in its poller batch.
const batchReads = 4

// readPolled reads the socket until it has nothing more for now, or reads maxReads times (0: no
// limit), handling every whole message; it reports false when the connection is over, and
// whether the socket was drained (else it may hold more, and no event will say so).
func (c *conn) readPolled(sc *scratch, maxReads int) (ok, drained bool) {
	switch {
	case c.in == nil:
		c.in = readPool.Get().(*[]byte)
	case len(*c.in) < readBufferSize:
		bp := readPool.Get().(*[]byte)
		*bp = append((*bp)[:0], *c.in...)
		c.in = bp
	}
	for reads := 1; ; reads++ {
		c.room()
		b := *c.in
		n, err := c.readNow(b[len(b):cap(b)])
		if err != nil {
			return false, true
		}
		if n == 0 {
			return true, true
		}
		*c.in = b[:len(b)+n]
		if !c.process(sc) {
			return false, true
		}
		if len(b)+n < cap(b) {
			// The socket had less than there was room for: it is drained. (If more came
			// meanwhile, the poller says so again.)
			return true, true
		}
		if reads == maxReads {
			return true, false
		}
	}
}

// serve reads a socket on the calling goroutine until it closes: the way of sockets the
// poller cannot watch.
func (c *conn) serve() {
	defer c.finish()
	b := make([]byte, 0, 1024)
	c.in = &b
	for {
		c.room()
		b := *c.in
		n, err := c.nc.Read(b[len(b):cap(b)])
		if n > 0 {
			*c.in = b[:len(b)+n]
			sc := c.s.getScratch()
			ok := c.process(sc)
			sc.flushAll()
			sc.release()
			if !ok {
				return
			}
			if len(*c.in) == 0 && cap(*c.in) > 1024 {
				b := make([]byte, 0, 1024) // let go of what a long message needed
				c.in = &b
			}
		}
		if err != nil {
			return
		}
	}
}

// room makes room in c.in for a read, doubling it when it is full: a frame longer than the
// buffer grows it as its bytes come, never past twice the longest frame allowed (longer ones are
// refused by their header).
func (c *conn) room() {
	b := *c.in
	if len(b) < cap(b) {
		return
	}
	nb := make([]byte, len(b), 2*cap(b))
	copy(nb, b)
	putRead(c.in)
	c.in = &nb
}

// process handles the whole frames at the start of c.in and keeps the rest; it reports false
// when the connection is over.
func (c *conn) process(sc *scratch) bool {
	s := c.s
	b := *c.in
	used := 0
	for {
		n, _, op, payload, code := c.frames.next(b[used:], s.maxMessage)
		if code != 0 {
			if code == closeTooBig {
				s.m.bad[badTooLarge].Add(1)
			}
			c.closeWith(code, sc)
			return false
		}
		if n == 0 {
			break // the frame is not whole yet
		}
		used += n
		switch op {
		case opText, opBinary:
			c.message(payload, sc)
		case opPing:
			c.queue(opPong, payload, sc)
		case opPong:
			c.lastHeard.Store(s.clock())
		case opClose:
			// Answer with the client's code, as gorilla/websocket does, and close.
			code := 0
			switch {
			case len(payload) == 1:
				code = closeProtocolError
			case len(payload) >= 2:
				code = int(payload[0])<<8 | int(payload[1])
			}
			c.closeWith(code, sc)
			return false
		}
		if c.isDead() {
			return false
		}
	}
	// Keep the rest at the start.
	*c.in = b[:copy(b, b[used:])]
	return true
}

// message handles one whole message.
func (c *conn) message(msg []byte, sc *scratch) {
	c.lastHeard.Store(c.s.clock())
	c.s.handle(c, msg, sc)
}

func (c *conn) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// closeWith queues a close frame with code (0: none), after which the socket closes.
func (c *conn) closeWith(code int, sc *scratch) {
	var buf [4]byte
	payload := appendClose(buf[:0], code)[2:]
	c.queue(opClose, payload, sc)
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
}

// send queues msg as a text frame. It never blocks; a socket whose queue is full is too slow
// to keep: it is closed, and its peers leave their swarms.
func (c *conn) send(msg []byte, sc *scratch) bool {
	return c.queue(opText, msg, sc)
}

// queue queues a frame; sc, when not nil, is the wakeup that flushes it at its end, else it is
// flushed now.
func (c *conn) queue(op byte, payload []byte, sc *scratch) bool {
	c.mu.Lock()
	if c.dead || c.closing {
		c.mu.Unlock()
		return false
	}
	if c.queued >= c.s.queueLen {
		c.mu.Unlock()
		c.s.m.slowDropped.Add(1)
		c.kill()
		return false
	}
	if c.out == nil {
		c.out = framePool.Get().(*[]byte)
	}
	*c.out = appendFrame(*c.out, op, payload)
	c.queued++
	if c.state != writeIdle {
		c.mu.Unlock()
		return true
	}
	c.state = writeScheduled
	c.mu.Unlock()
	if sc != nil {
		sc.flush = append(sc.flush, c)
	} else {
		c.flush()
	}
	return true
}

// take takes the queued frames for writing, or ends the flush when there are none: then the
// socket is closed if a close frame was the last thing written.
func (c *conn) take() *[]byte {
	c.mu.Lock()
	bp := c.out
	c.out, c.queued = nil, 0
	if bp == nil || c.dead {
		c.state = writeIdle
		closing := c.closing && !c.dead
		c.closeFD()
		full := c.fullWritten()
		c.mu.Unlock()
		c.releaseFull(full)
		if bp != nil {
			putFrames(bp)
		}
		if closing {
			c.kill()
		}
		return nil
	}
	c.state = writeBusy
	c.mu.Unlock()
	return bp
}

// flush writes what is queued. A polled socket is written without waiting, here, and when it
// cannot take all, the rest waits for the poller to find room (resumeWrite). A socket read on
// a goroutine is written by a goroutine that waits.
func (c *conn) flush() {
	if !c.polled {
		c.mu.Lock()
		c.state = writeBusy
		c.mu.Unlock()
		go c.writeLoop()
		return
	}
	c.drain()
}

// drain writes a polled socket's queue until it is empty, or the socket full.
func (c *conn) drain() {
	for {
		bp := c.take()
		if bp == nil || !c.writeOut(bp, 0) {
			return
		}
	}
}

// resumeWrite runs when the poller finds room in a socket whose writer waits for it.
func (c *conn) resumeWrite() {
	c.stalledAt.Store(0)
	c.mu.Lock()
	bp, off := c.pending, c.pendingOff
	c.pending = nil
	c.mu.Unlock()
	if bp != nil && c.writeOut(bp, off) {
		c.drain()
	}
}

// writeOut writes bp from off on to a polled socket, as much as it takes. It reports true when
// all is written; else the writer waits for room (the rest is pending) or the socket failed.
func (c *conn) writeOut(bp *[]byte, off int) bool {
	for off < len(*bp) {
		n, err := c.writeNow((*bp)[off:])
		if err != nil {
			putFrames(bp)
			c.kill()
			c.take() // ends the flush
			return false
		}
		if n > 0 {
			off += n
			continue
		}
		c.mu.Lock()
		if c.canWrite {
			// Room came since this write began: try again rather than wait for more.
			c.canWrite = false
			c.mu.Unlock()
			continue
		}
		if c.dead {
			c.mu.Unlock()
			putFrames(bp)
			c.take()
			return false
		}
		c.pending, c.pendingOff, c.wantWrite = bp, off, true
		c.stalledAt.Store(c.s.clock())
		c.mu.Unlock()
		return false
	}
	putFrames(bp)
	return true
}

// writeLoop writes the queue of a socket read on a goroutine until it is empty, waiting as long
// as writeTimeout per write.
func (c *conn) writeLoop() {
	for {
		bp := c.take()
		if bp == nil {
			return
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := c.nc.Write(*bp)
		putFrames(bp)
		if err != nil {
			c.kill()
			c.take() // ends the flush
			return
		}
	}
}

// kill closes the socket: a socket read on a goroutine at once, which its reader then finds; a
// polled one is shut down, and its descriptor closed once no goroutine reads or writes it. A
// polled socket that no goroutine is reading is finished here; a reader finishes its own.
func (c *conn) kill() {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	idle := c.polled && !c.reading
	var pending *[]byte
	if c.polled {
		c.shutdown()
		if c.wantWrite {
			// The writer waits for room that will not come: the flush ends here.
			pending, c.pending, c.wantWrite, c.state = c.pending, nil, false, writeIdle
			c.stalledAt.Store(0)
		}
		c.closeFD()
	}
	var full int32
	if c.state == writeIdle {
		full = c.fullWritten()
	}
	c.mu.Unlock()
	c.releaseFull(full)
	if pending != nil {
		putFrames(pending)
	}
	_ = c.nc.Close()
	if idle {
		go c.finish()
	}
}

// finish ends the connection once: the socket is closed (after its close frame, if one is
// being written), the poller forgets it, and its peers leave their swarms.
func (c *conn) finish() {
	if !c.finished.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	writingClose := c.closing && !c.dead && c.state != writeIdle
	c.mu.Unlock()
	if !writingClose {
		c.kill()
	}
	if c.polled {
		c.s.poll.forget(c)
		c.s.m.polled.Add(-1)
	}
	c.s.leaveAll(c)
	if c.in != nil {
		putRead(c.in)
		c.in = nil
	}
	c.frames = frameReader{}
	c.mu.Lock()
	c.closeFD()
	full := c.fullWritten()
	c.mu.Unlock()
	c.releaseFull(full)
	c.s.untrack(c)
}

// leaveAll removes the connection's peers from every swarm it announced, as stopped announces.
func (s *Server) leaveAll(c *conn) {
	for i := range c.joined {
		j := &c.joined[i]
		if !j.registered {
			continue
		}
		s.idx.leave(&j.ih, &j.id, c)
		if s.relay != nil {
			s.relay.Leave(&j.ih, &j.id)
		}
		a := models.Announce{
			InfoHash: j.ih, PeerID: j.id, Passkey: c.passkey, UserAgent: c.userAgent,
			Endpoint: netip.AddrPortFrom(c.remote, 0), Remote: c.remote,
			Event: models.Stopped, Uploaded: j.up, Downloaded: j.down, Left: leftOf(j.seeder),
			CompactOne: true, WebRTC: true,
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.reqTimeout)
		if err := s.tkr.HandleAnnounce(ctx, &a, discard{}); err != nil && glog.V(2) {
			glog.Infof("ws: %s: stopped on close: %v", c.remote, err)
		}
		cancel()
	}
	c.joined = nil
}

// joinedOf returns the connection's entry for ih, or nil.
func (c *conn) joinedOf(ih *models.InfoHash) *joined {
	for i := range c.joined {
		if c.joined[i].ih == *ih {
			return &c.joined[i]
		}
	}
	return nil
}

// forgetJoined removes the connection's entry for ih.
func (c *conn) forgetJoined(ih *models.InfoHash) {
	for i := range c.joined {
		if c.joined[i].ih == *ih {
			last := len(c.joined) - 1
			c.joined[i] = c.joined[last]
			c.joined = c.joined[:last]
			return
		}
	}
}

type discard struct{}

func (discard) WriteAnnounce(*models.AnnounceResponse) error { return nil }

func leftOf(seeder bool) int64 {
	if seeder {
		return 0
	}
	return 1
}

// keep closes sockets silent for ws_idle_timeout, and polled sockets that took nothing of what
// they were written for writeTimeout, and pings the others every ws_ping_interval, until the
// server closes.
func (s *Server) keep() {
	defer s.keeperDone.Done()
	every := s.idleTimeout
	if s.ping > 0 && s.ping < every {
		every = s.ping
	}
	every = min(max(every/4, 50*time.Millisecond), time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var idle, ping, stuck []*conn
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		now := s.clock()
		s.mu.Lock()
		for c := range s.conns {
			switch stalled := c.stalledAt.Load(); {
			case stalled != 0 && now-stalled >= int64(writeTimeout):
				stuck = append(stuck, c)
			case now-c.lastHeard.Load() >= int64(s.idleTimeout):
				idle = append(idle, c)
			case s.ping > 0 && now-c.lastPing >= int64(s.ping):
				c.lastPing = now
				ping = append(ping, c)
			}
		}
		s.mu.Unlock()
		for i, c := range idle {
			s.m.idleClosed.Add(1)
			c.kill()
			idle[i] = nil
		}
		for i, c := range stuck {
			c.kill()
			stuck[i] = nil
		}
		for i, c := range ping {
			c.queue(opPing, nil, nil)
			ping[i] = nil
		}
		idle, ping, stuck = idle[:0], ping[:0], stuck[:0]
	}
}
