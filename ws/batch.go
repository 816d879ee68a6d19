package ws

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// batch is the sockets one pass of the poller found readable (one epoll_wait): their readers
// queue what they answer and relay in the sockets it goes to, and the last reader of the batch
// to finish writes every socket that got frames, once each. A socket that gets a message from
// each of several peers of a batch is written once for all of them, where a flush per reader
// wrote it once each: at saturation, when a pass finds hundreds of sockets ready, an announce
// with five offers costs about two writes rather than six.
//
// A batch is bounded by the poller's events array, and every reader of it reads its socket
// once (what it holds) before it joins the batch's flush: a socket that turns readable again
// meanwhile is read after that, each of its next reads flushed on its own. What the batch
// queued waits for its slowest reader, whose calls to the core are bounded by request_timeout.
type batch struct {
	refs atomic.Int32
	mu   sync.Mutex
	// flush holds the sockets the batch's readers queued frames to, each once (writeScheduled).
	flush []*conn
}

// maxBatchFlush bounds the flush list a pooled batch keeps.
const maxBatchFlush = 1 << 14

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// newBatch returns a batch its caller holds one reference to, released by done.
func newBatch() *batch {
	b := batchPool.Get().(*batch)
	b.refs.Store(1)
	return b
}

// hold takes a reference to b for one more reader.
func (b *batch) hold() { b.refs.Add(1) }

// join adds the sockets a reader queued frames to (sc.flush) to b's, and empties sc.flush.
func (b *batch) join(sc *scratch) {
	if len(sc.flush) == 0 {
		return
	}
	b.mu.Lock()
	b.flush = append(b.flush, sc.flush...)
	b.mu.Unlock()
	clear(sc.flush)
	sc.flush = sc.flush[:0]
}

// flushChunk is how many sockets one goroutine writes of a large batch's flush when there is
// more than one CPU to write on.
const flushChunk = 128

// done releases a reference; the last one writes the batch's sockets and puts b back.
func (b *batch) done() {
	if b.refs.Add(-1) != 0 {
		return
	}
	flush := b.flush
	if len(flush) > flushChunk && runtime.GOMAXPROCS(0) > 1 {
		var wg sync.WaitGroup
		for i := flushChunk; i < len(flush); i += flushChunk {
			wg.Add(1)
			go func(part []*conn) {
				defer wg.Done()
				flushConns(part)
			}(flush[i:min(i+flushChunk, len(flush))])
		}
		flushConns(flush[:flushChunk])
		wg.Wait()
	} else {
		flushConns(flush)
	}
	clear(flush)
	b.flush = flush[:0]
	if cap(b.flush) > maxBatchFlush {
		b.flush = nil
	}
	batchPool.Put(b)
}

func flushConns(cs []*conn) {
	for _, c := range cs {
		c.flush()
	}
}
