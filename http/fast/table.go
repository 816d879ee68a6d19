package fast

import (
	"net/netip"
	"sync/atomic"
)

// The connection budget. Every connection the frontend holds, on the fast path or handed over
// to net/http, has an entry in a connTable from its accept to its close. A connection that
// waits for its client is linked, oldest first, in one of two tiers: idle (keep-alive, between
// requests) and head (waiting for its first request, or for the rest of a head). When a new
// connection would pass max_connections, or its address's max_connections_per_ip, the oldest
// idle connection (of everyone, or of that address) is shed, else the oldest head; only when
// every connection in scope is busy answering is the new one refused. A connection that is
// shed is closed by its own goroutine, woken by a past read deadline.
//
// The table is not safe for concurrent use: Server.mu guards it. A connection leaving a wait
// marks itself busy with an atomic compare-and-swap, without the lock, and stays linked until
// the next wait relinks it or an eviction passes over it; the swap and the eviction's swap to
// shed decide between them which one wins.

// Connection states, in connEntry.state. A waiting state has its tier's number.
const (
	stateBusy int32 = iota // being answered, or not waiting on the client
	stateIdle              // waiting for the next request of a keep-alive connection
	stateHead              // waiting for the first request, or for the rest of a head
	stateShed              // shed: its goroutine is to close it
)

// limitReason is why a connection was refused or shed, as the metrics label it.
type limitReason uint8

const (
	reasonMaxConnections limitReason = iota // the budget, max_connections
	reasonPerIP                             // the address's cap, max_connections_per_ip
	reasonFileLimit                         // accept failed for want of file descriptors
	numLimitReasons
)

var limitReasonNames = [numLimitReasons]string{"max_connections", "max_connections_per_ip", "file_limit"}

// The tiers, in the order connections are shed.
const (
	tierNone = iota
	tierIdle
	tierHead
	numTiers
)

var tierNames = [numTiers]string{"", "idle", "head"}

// The two lists an entry is linked in: the table's and its address's.
const (
	linkAll = iota
	linkAddr
)

// shedder is the owner of a connection: shed makes it close the connection soon, without
// blocking. It is called with the table's lock held.
type shedder interface {
	shed()
}

// links are an entry's place in one list.
type links struct {
	prev, next *connEntry
}

// connEntry is one connection in the table.
type connEntry struct {
	owner shedder
	state atomic.Int32
	// addr is the connection's address's record; nil when the address has no cap (a trusted
	// proxy, or max_connections_per_ip 0).
	addr   *addrConns
	tier   int
	link   [2]links
	linked bool
}

// connList is a doubly linked list of entries through their link[which].
type connList struct {
	head, tail *connEntry
	which      int
}

func (l *connList) pushBack(e *connEntry) {
	k := &e.link[l.which]
	k.prev, k.next = l.tail, nil
	if l.tail != nil {
		l.tail.link[l.which].next = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *connList) remove(e *connEntry) {
	k := &e.link[l.which]
	if k.prev != nil {
		k.prev.link[l.which].next = k.next
	} else {
		l.head = k.next
	}
	if k.next != nil {
		k.next.link[l.which].prev = k.prev
	} else {
		l.tail = k.prev
	}
	k.prev, k.next = nil, nil
}

// addrKey is an IPv4 address (in its IPv4-mapped form) or an IPv6 /64.
type addrKey [16]byte

// keyOf is the key that max_connections_per_ip counts a under.
func keyOf(a netip.Addr) addrKey {
	b := a.Unmap().As16()
	if !a.Unmap().Is4() {
		clear(b[8:])
	}
	return b
}

// addrConns is what the table knows of one address's connections.
type addrConns struct {
	key            addrKey
	open, shedding int
	tiers          [numTiers]connList
}

// connTable counts connections against the budget and picks which to shed.
type connTable struct {
	// max is max_connections; perAddr is max_connections_per_ip, 0 for no cap; slack is how
	// many connections that were shed may still be open (their goroutines closing them)
	// beyond max before new ones are refused.
	max, perAddr, slack int

	open, shedding int
	tiers          [numTiers]connList
	addrs          map[addrKey]*addrConns
	// free holds records of addresses gone, for reuse; it is never longer than the most
	// addresses that had connections at once.
	free []*addrConns

	// Counts for the metrics.
	refused [numLimitReasons]uint64
	shed    [numLimitReasons][numTiers]uint64
}

func newConnTable(max, perAddr int) *connTable {
	t := &connTable{max: max, perAddr: perAddr, slack: max/16 + 16, addrs: make(map[addrKey]*addrConns)}
	for i := range t.tiers {
		t.tiers[i].which = linkAll
	}
	return t
}

// admit counts e, a new connection from key, unless it must be refused; capped says whether
// max_connections_per_ip applies to it. To make room it sheds the oldest idle connection, else
// the oldest waiting for a head: of the same address when the address is at its cap, else of
// anyone when the table is at the budget. It reports false, and counts the refusal, when there
// was none to shed.
func (t *connTable) admit(e *connEntry, key addrKey, capped bool) bool {
	if t.open >= t.max+t.slack {
		// Too many shed connections are still open: their descriptors are not free yet.
		t.refused[reasonMaxConnections]++
		return false
	}
	var a *addrConns
	if capped && t.perAddr > 0 {
		a = t.addrs[key]
		if a != nil && a.open-a.shedding >= t.perAddr && !t.shedOne(&a.tiers, reasonPerIP) {
			t.refused[reasonPerIP]++
			return false
		}
	}
	if t.open-t.shedding >= t.max && !t.shedOne(&t.tiers, reasonMaxConnections) {
		t.refused[reasonMaxConnections]++
		return false
	}
	if capped && t.perAddr > 0 && a == nil {
		if n := len(t.free); n > 0 {
			a = t.free[n-1]
			t.free[n-1] = nil
			t.free = t.free[:n-1]
		} else {
			a = new(addrConns)
			for i := range a.tiers {
				a.tiers[i].which = linkAddr
			}
		}
		a.key = key
		t.addrs[key] = a
	}
	e.addr, e.tier, e.linked = a, tierNone, true
	e.state.Store(stateBusy)
	t.open++
	if a != nil {
		a.open++
	}
	return true
}

// shedOne sheds the oldest idle connection of tiers, else the oldest waiting for a head. It
// unlinks, on its way, connections that went busy since they were linked.
func (t *connTable) shedOne(tiers *[numTiers]connList, why limitReason) bool {
	for tier := tierIdle; tier < numTiers; tier++ {
		l := &tiers[tier]
		for e := l.head; e != nil; e = l.head {
			ok := e.state.CompareAndSwap(int32(tier), stateShed)
			t.unlink(e)
			if !ok {
				continue // busy since: it is relinked when it waits again
			}
			t.shedding++
			if e.addr != nil {
				e.addr.shedding++
			}
			t.shed[why][tier]++
			e.owner.shed()
			return true
		}
	}
	return false
}

// shedForFiles sheds the oldest waiting connection of all, when accept failed for want of file
// descriptors.
func (t *connTable) shedForFiles() bool {
	return t.shedOne(&t.tiers, reasonFileLimit)
}

// wait links e as waiting in tier (tierIdle or tierHead) and marks it so, unless it was shed:
// then it reports false. A connection already waiting for a head keeps its place.
func (t *connTable) wait(e *connEntry, tier int) bool {
	if !e.linked {
		return true // not counted (the budget is off): nothing to shed it for
	}
	if e.state.Load() == stateShed {
		return false
	}
	if e.tier != tier || tier == tierIdle {
		t.unlink(e)
		t.tiers[tier].pushBack(e)
		if e.addr != nil {
			e.addr.tiers[tier].pushBack(e)
		}
		e.tier = tier
	}
	e.state.Store(int32(tier))
	return true
}

// active marks e busy after a wait; it reports false when e was shed meanwhile. It needs no
// lock.
func (e *connEntry) active() bool {
	for {
		switch s := e.state.Load(); s {
		case stateShed:
			return false
		case stateBusy:
			return true
		default:
			if e.state.CompareAndSwap(s, stateBusy) {
				return true
			}
		}
	}
}

// shedNow reports whether e was shed.
func (e *connEntry) shedNow() bool { return e.state.Load() == stateShed }

// unlink takes e out of its tier's lists.
func (t *connTable) unlink(e *connEntry) {
	if e.tier == tierNone {
		return
	}
	t.tiers[e.tier].remove(e)
	if e.addr != nil {
		e.addr.tiers[e.tier].remove(e)
	}
	e.tier = tierNone
}

// remove uncounts e, whose connection is closed.
func (t *connTable) remove(e *connEntry) {
	if !e.linked {
		return
	}
	t.unlink(e)
	shed := e.state.Load() == stateShed
	t.open--
	if shed {
		t.shedding--
	}
	if a := e.addr; a != nil {
		a.open--
		if shed {
			a.shedding--
		}
		if a.open == 0 {
			delete(t.addrs, a.key)
			t.free = append(t.free, a)
		}
	}
	e.addr, e.linked = nil, false
	e.state.Store(stateBusy)
}

// replace puts to in from's place, for a connection handed from one owner to another; it
// reports false, leaving both alone, when from was shed.
func (t *connTable) replace(from, to *connEntry) bool {
	if !from.linked {
		return true
	}
	if from.state.Load() == stateShed {
		return false
	}
	t.unlink(from)
	to.addr, to.tier, to.linked = from.addr, tierNone, true
	to.state.Store(stateBusy)
	from.addr, from.linked = nil, false
	from.state.Store(stateBusy)
	return true
}

// waiting is how many connections wait in tier, for the metrics; it walks the list.
func (t *connTable) waiting(tier int) int {
	n := 0
	for e := t.tiers[tier].head; e != nil; e = e.link[linkAll].next {
		if e.state.Load() == int32(tier) {
			n++
		}
	}
	return n
}
