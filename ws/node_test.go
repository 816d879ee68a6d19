package ws_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// btclientDir holds the reference's tracker client (package.json pins it; node_modules is
// git-ignored, installed by .ci/run with npm install --ignore-scripts).
const btclientDir = "testdata/btclient"

// requireNode skips the test, or fails it under CHIHAYA_REQUIRE_SWARM=1 (which CI sets), when
// node or the installed client is missing.
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(btclientDir, "node_modules", "bittorrent-tracker", "package.json"))
	}
	if err != nil {
		msg := "needs node and bittorrent-tracker: npm install --prefix ws/testdata/btclient --ignore-scripts --no-save (" + err.Error() + ")"
		if os.Getenv("CHIHAYA_REQUIRE_SWARM") == "1" {
			t.Fatal(msg + " (CHIHAYA_REQUIRE_SWARM=1, so this is a failure)")
		}
		t.Skip(msg)
	}
	return node
}

type nodeEvent struct {
	Who, What, Message, ID           string
	Complete, Incomplete, Downloaded *int
	Interval                         int
}

// TestReferenceClient runs two of bittorrent-tracker's own clients against the tracker from
// Node: their announces, a relayed offer and answer, a scrape and their stops.
func TestReferenceClient(t *testing.T) {
	node := requireNode(t)
	c := startTracker(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--import", "./register.mjs", "btclient.mjs", "ws://"+c.Addr().String())
	cmd.Dir = btclientDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out, stderr.String())
	var evs []nodeEvent
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var ev nodeEvent
		require.NoError(t, json.Unmarshal(sc.Bytes(), &ev), sc.Text())
		evs = append(evs, ev)
	}
	find := func(who, what string) *nodeEvent {
		for i := range evs {
			if evs[i].Who == who && evs[i].What == what {
				return &evs[i]
			}
		}
		t.Fatalf("no %s event from %s in:\n%s", what, who, out)
		return nil
	}
	idA := "2d5757303030312d616161616161616161616161"
	idB := "2d5757303030312d626262626262626262626262"
	ua := find("A", "update")
	assert.Equal(t, 1, *ua.Complete)
	assert.Equal(t, 0, *ua.Incomplete)
	assert.Equal(t, 360, ua.Interval)
	ub := find("B", "update")
	assert.Equal(t, 1, *ub.Complete)
	assert.Equal(t, 1, *ub.Incomplete)
	// B's offer reached A, A's answer reached B.
	assert.Equal(t, idB, find("A", "peer").ID)
	assert.Equal(t, idA, find("B", "peer").ID)
	sa := find("A", "scrape")
	assert.Equal(t, 1, *sa.Complete)
	assert.Equal(t, 1, *sa.Incomplete)
	find("-", "done")
	for _, ev := range evs {
		assert.NotEqual(t, "warning", ev.What, "%+v", ev)
	}
	assert.False(t, strings.Contains(stderr.String(), "Error"), stderr.String())

	// Both stopped: the swarm is empty.
	cl := dial(t, c, "/announce")
	ih := string(bytes.Repeat([]byte{0xaa}, 20))
	ihs := latin1ToString(ih)
	deadline := time.Now().Add(5 * time.Second)
	for {
		counts := cl.barrier(ihs)
		if counts["complete"] == float64(0) && counts["incomplete"] == float64(0) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the stopped clients are still counted: %v", counts)
	}
}

// latin1ToString turns bytes into the binary string that carries them.
func latin1ToString(b string) string {
	r := make([]rune, len(b))
	for i := 0; i < len(b); i++ {
		r[i] = rune(b[i])
	}
	return string(r)
}
