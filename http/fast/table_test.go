package fast

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeOwner records that it was shed.
type fakeOwner struct {
	name string
	log  *[]string
}

func (f *fakeOwner) shed() { *f.log = append(*f.log, f.name) }

// tableStep is one thing that happens to a connection of the table under test.
type tableStep struct {
	op   string // open, idle, head, busy, close, handoff
	conn string
	// For open: the client's address, and whether max_connections_per_ip spares it.
	addr     string
	uncapped bool
	// want is what the step reports: admitted for open, not shed for idle, head, busy and
	// handoff.
	want bool
	// shed are the connections the step shed, in order.
	shed []string
}

func open(conn, addr string, want bool, shed ...string) tableStep {
	return tableStep{op: "open", conn: conn, addr: addr, want: want, shed: shed}
}

func do(op, conn string, want bool) tableStep { return tableStep{op: op, conn: conn, want: want} }

func TestConnTable(t *testing.T) {
	const (
		a1 = "192.0.2.1"
		a2 = "192.0.2.2"
		a3 = "192.0.2.3"
		// Two addresses of one /64, and one of another.
		v6a = "2001:db8:0:1::a"
		v6b = "2001:db8:0:1:ffff::b"
		v6c = "2001:db8:0:2::c"
	)
	tests := []struct {
		name         string
		max, perAddr int
		slack        int // 0: the table's own
		steps        []tableStep
		open         int
		refused      [numLimitReasons]uint64
		shed         [numLimitReasons][numTiers]uint64
	}{
		{
			name: "under the budget nothing is shed",
			max:  3, perAddr: 0,
			steps: []tableStep{open("a", a1, true), open("b", a1, true), do("idle", "a", true), open("c", a1, true)},
			open:  3,
		},
		{
			name: "at the budget the oldest idle connection goes",
			max:  3, perAddr: 0,
			steps: []tableStep{
				open("a", a1, true), open("b", a2, true), open("c", a3, true),
				do("idle", "b", true), do("idle", "a", true), do("idle", "c", true),
				open("d", a3, true, "b"),
				open("e", a3, true, "a"),
			},
			open: 5, // a and b are closing: their goroutines uncount them
			shed: [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierIdle: 2}},
		},
		{
			name: "a request renews a connection's place",
			max:  2,
			steps: []tableStep{
				open("a", a1, true), open("b", a2, true),
				do("idle", "a", true), do("idle", "b", true),
				do("busy", "a", true), do("idle", "a", true),
				open("c", a3, true, "b"),
			},
			open: 3,
			shed: [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierIdle: 1}},
		},
		{
			name: "idle connections go before older ones waiting for a head",
			max:  2,
			steps: []tableStep{
				open("a", a1, true), open("b", a2, true),
				do("head", "a", true), do("idle", "b", true),
				open("c", a3, true, "b"),
				open("d", a3, true, "a"),
				do("head", "a", false), do("busy", "b", false),
			},
			open: 4,
			shed: [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierIdle: 1, tierHead: 1}},
		},
		{
			name: "a head keeps its place while it arrives in parts",
			max:  2,
			steps: []tableStep{
				open("a", a1, true), open("b", a2, true),
				do("head", "a", true), do("head", "b", true),
				do("busy", "a", true), do("head", "a", true), // more of a's head came
				open("c", a3, true, "a"),
			},
			open: 3,
			shed: [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierHead: 1}},
		},
		{
			name: "when every connection is busy the new one is refused",
			max:  2,
			steps: []tableStep{
				open("a", a1, true), open("b", a2, true),
				do("idle", "a", true), do("busy", "a", true), // idle once, busy now: passed over
				open("c", a3, false),
				do("idle", "a", true), // relinked
				open("d", a3, true, "a"),
			},
			open:    3,
			refused: [numLimitReasons]uint64{reasonMaxConnections: 1},
			shed:    [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierIdle: 1}},
		},
		{
			name: "a closed connection makes room without shedding",
			max:  2,
			steps: []tableStep{
				open("a", a1, true), open("b", a2, true), do("idle", "a", true),
				do("close", "b", true),
				open("c", a3, true),
			},
			open: 2,
		},
		{
			name: "shed connections still closing are bounded by the slack",
			max:  2, slack: 1,
			steps: []tableStep{
				open("a", a1, true), open("b", a2, true),
				do("idle", "a", true), do("idle", "b", true),
				open("c", a3, true, "a"),
				open("d", a3, false), // b is idle, but a still holds its descriptor
				do("close", "a", true),
				open("e", a3, true, "b"),
			},
			open:    3,
			refused: [numLimitReasons]uint64{reasonMaxConnections: 1},
			shed:    [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierIdle: 2}},
		},
		{
			name: "an address over its cap loses its own oldest idle connection, not another's",
			max:  10, perAddr: 2,
			steps: []tableStep{
				open("other", a2, true), do("idle", "other", true),
				open("x1", a1, true), open("x2", a1, true),
				do("idle", "x2", true), do("idle", "x1", true),
				open("x3", a1, true, "x2"),
				open("x4", a1, true, "x1"),
			},
			open: 5,
			shed: [numLimitReasons][numTiers]uint64{reasonPerIP: {tierIdle: 2}},
		},
		{
			name: "an address whose connections are all busy is refused though the budget has room",
			max:  10, perAddr: 2,
			steps: []tableStep{
				open("other", a2, true), do("idle", "other", true),
				open("x1", a1, true), open("x2", a1, true),
				open("x3", a1, false),
				open("y", a3, true),
			},
			open:    4,
			refused: [numLimitReasons]uint64{reasonPerIP: 1},
		},
		{
			name: "a trusted proxy has no cap",
			max:  10, perAddr: 1,
			steps: []tableStep{
				{op: "open", conn: "p1", addr: a1, uncapped: true, want: true},
				{op: "open", conn: "p2", addr: a1, uncapped: true, want: true},
				{op: "open", conn: "p3", addr: a1, uncapped: true, want: true},
				open("x", a1, true), // the proxy's own connections do not count against the address
				open("y", a1, false),
			},
			open:    4,
			refused: [numLimitReasons]uint64{reasonPerIP: 1},
		},
		{
			name: "an IPv6 /64 counts as one address",
			max:  10, perAddr: 1,
			steps: []tableStep{
				open("a", v6a, true), do("idle", "a", true),
				open("b", v6b, true, "a"),
				open("c", v6c, true),
			},
			open: 3,
			shed: [numLimitReasons][numTiers]uint64{reasonPerIP: {tierIdle: 1}},
		},
		{
			name: "an address's record is reused once its connections closed",
			max:  10, perAddr: 1,
			steps: []tableStep{
				open("a", a1, true), do("close", "a", true),
				open("b", a1, true), open("c", a1, false),
			},
			open:    1,
			refused: [numLimitReasons]uint64{reasonPerIP: 1},
		},
		{
			name: "a handed-over connection keeps its place in the count",
			max:  1, perAddr: 1,
			steps: []tableStep{
				open("a", a1, true), do("handoff", "a", true),
				do("idle", "a2", true),
				open("b", a2, true, "a2"),
			},
			open: 2,
			shed: [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierIdle: 1}},
		},
		{
			name: "a shed connection is not handed over",
			max:  1,
			steps: []tableStep{
				open("a", a1, true), do("idle", "a", true),
				open("b", a2, true, "a"),
				do("handoff", "a", false),
				do("close", "a", true),
			},
			open: 1,
			shed: [numLimitReasons][numTiers]uint64{reasonMaxConnections: {tierIdle: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := newConnTable(tt.max, tt.perAddr)
			if tt.slack > 0 {
				tab.slack = tt.slack
			}
			var log []string
			conns := map[string]*connEntry{}
			entry := func(name string) *connEntry {
				if e, ok := conns[name]; ok {
					return e
				}
				e := &connEntry{owner: &fakeOwner{name: name, log: &log}}
				conns[name] = e
				return e
			}
			for i, st := range tt.steps {
				log = nil
				e := entry(st.conn)
				var got bool
				switch st.op {
				case "open":
					a := netip.MustParseAddr(st.addr)
					got = tab.admit(e, keyOf(a), !st.uncapped)
				case "idle":
					got = tab.wait(e, tierIdle)
				case "head":
					got = tab.wait(e, tierHead)
				case "busy":
					got = e.active()
				case "close":
					tab.remove(e)
					got = true
				case "handoff":
					got = tab.replace(e, entry(st.conn+"2"))
				default:
					t.Fatalf("step %d: unknown op %q", i, st.op)
				}
				require.Equal(t, st.want, got, "step %d: %s %s", i, st.op, st.conn)
				require.Equal(t, st.shed, log, "step %d: %s %s sheds", i, st.op, st.conn)
				for _, name := range st.shed {
					assert.True(t, conns[name].shedNow(), "step %d: %s is marked shed", i, name)
				}
			}
			assert.Equal(t, tt.open, tab.open, "connections counted")
			assert.Equal(t, tt.refused, tab.refused, "refused")
			assert.Equal(t, tt.shed, tab.shed, "shed")
			checkTable(t, tab)
		})
	}
}

// checkTable checks the table's invariants: the lists are consistent both ways, each entry is
// in its own tier's lists, and the per-address counts add up.
func checkTable(t *testing.T, tab *connTable) {
	t.Helper()
	for tier := tierIdle; tier < numTiers; tier++ {
		var prev *connEntry
		for e := tab.tiers[tier].head; e != nil; e = e.link[linkAll].next {
			assert.Same(t, prev, e.link[linkAll].prev)
			assert.Equal(t, tier, e.tier)
			assert.True(t, e.linked)
			prev = e
		}
		assert.Same(t, prev, tab.tiers[tier].tail)
	}
	shedding := 0
	for k, a := range tab.addrs {
		assert.Equal(t, k, a.key)
		assert.Positive(t, a.open)
		shedding += a.shedding
	}
	assert.LessOrEqual(t, shedding, tab.shedding)
}

func TestKeyOf(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{a: "192.0.2.1", b: "192.0.2.1", same: true},
		{a: "192.0.2.1", b: "192.0.2.2", same: false},
		{a: "::ffff:192.0.2.1", b: "192.0.2.1", same: true},
		{a: "2001:db8::1", b: "2001:db8::ffff:1", same: true},
		{a: "2001:db8:0:0:1::1", b: "2001:db8::1", same: true},
		{a: "2001:db8:0:1::1", b: "2001:db8::1", same: false},
		{a: "::", b: "0.0.0.0", same: false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" "+tt.b, func(t *testing.T) {
			ka, kb := keyOf(netip.MustParseAddr(tt.a)), keyOf(netip.MustParseAddr(tt.b))
			assert.Equal(t, tt.same, ka == kb)
		})
	}
}
