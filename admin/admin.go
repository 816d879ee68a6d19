// Package admin is the operator's HTTP side: the admin API under /admin/ (the access list, one
// swarm's counts, dropping a swarm, reloading), served only with an admin token, and the
// health probes /healthz and /readyz for load balancers and supervisors. Answers are JSON;
// errors are JSON objects with an "error" message.
package admin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/chihaya/chihaya/accesslist"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// Prefix is the path under which the API is served.
const Prefix = "/admin/"

// List is the access list as the API edits it; *accesslist.List implements it.
type List interface {
	Mode() accesslist.Mode
	Path() string
	Hashes() []models.InfoHash
	Add(ih models.InfoHash) (bool, error)
	Remove(ih models.InfoHash) (bool, error)
}

// Swarms reads and drops swarms; *tracker.Tracker implements it.
type Swarms interface {
	TorrentCounts(ctx context.Context, ih models.InfoHash) (models.SwarmCounts, error)
	DropSwarm(ctx context.Context, ih models.InfoHash) (int, error)
}

// API serves the admin API. Build it with New.
type API struct {
	tokenSum [32]byte
	list     List
	swarms   Swarms
	reload   func(ctx context.Context) (any, error)
	timeout  time.Duration
}

// New returns the API guarded by token (which must not be empty). list may be nil when the
// access list is off; reload is what POST /admin/reload runs (SIGHUP's work) and returns as the
// answer's "result".
func New(token string, list List, swarms Swarms, reload func(ctx context.Context) (any, error)) *API {
	return &API{tokenSum: sha256.Sum256([]byte(token)), list: list, swarms: swarms, reload: reload, timeout: 30 * time.Second}
}

// authorized compares the bearer token in constant time (over digests, so that neither the
// token's length nor its prefix can be timed).
func (a *API) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const scheme = "Bearer "
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(h[len(scheme):])))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1
}

// ServeHTTP answers a request under Prefix.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		// The same answer for every path, method and wrong token: nothing about the API leaks.
		w.Header().Set("WWW-Authenticate", `Bearer realm="chihaya"`)
		writeError(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	rest := strings.TrimPrefix(r.URL.Path, Prefix)
	what, arg, _ := strings.Cut(rest, "/")
	switch {
	case what == "access-list" && arg == "":
		a.getList(w, r)
	case what == "access-list":
		a.editList(w, r, arg)
	case what == "torrents" && arg != "":
		a.torrent(ctx, w, r, arg)
	case what == "reload" && arg == "":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, http.MethodPost)
			return
		}
		result, err := a.reload(ctx)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "result": result})
	default:
		writeError(w, http.StatusNotFound, "no such admin call: "+r.Method+" "+r.URL.Path)
	}
}

func (a *API) getList(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	if a.list == nil || a.list.Mode() == accesslist.Off {
		writeJSON(w, http.StatusOK, map[string]any{"mode": "off", "count": 0, "info_hashes": []string{}})
		return
	}
	hs := a.list.Hashes()
	// Streamed: a list of millions is hundreds of megabytes of JSON.
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 1<<16)
	path, _ := json.Marshal(a.list.Path())
	fmt.Fprintf(bw, `{"mode":%q,"file":%s,"count":%d,"info_hashes":[`, a.list.Mode().String(), path, len(hs))
	var buf [42]byte
	buf[0], buf[41] = '"', '"'
	for i := range hs {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		hex.Encode(buf[1:41], hs[i][:])
		if _, err := bw.Write(buf[:]); err != nil {
			return
		}
	}
	_, _ = bw.WriteString("]}\n")
	_ = bw.Flush()
}

func (a *API) editList(w http.ResponseWriter, r *http.Request, arg string) {
	ih, ok := accesslist.ParseHash(arg)
	if !ok {
		writeError(w, http.StatusBadRequest, "want an info hash as 40 hex digits, got "+quote(arg))
		return
	}
	if a.list == nil || a.list.Mode() == accesslist.Off {
		writeError(w, http.StatusConflict, "access_list_mode is off: set it to \"allow\" or \"deny\" with an access_list_file")
		return
	}
	var changed bool
	var err error
	switch r.Method {
	case http.MethodPut:
		changed, err = a.list.Add(ih)
	case http.MethodDelete:
		changed, err = a.list.Remove(ih)
	default:
		methodNotAllowed(w, http.MethodPut+", "+http.MethodDelete)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"info_hash": hex.EncodeToString(ih[:]), "listed": r.Method == http.MethodPut, "changed": changed,
		"mode": a.list.Mode().String(),
	})
}

func (a *API) torrent(ctx context.Context, w http.ResponseWriter, r *http.Request, arg string) {
	ih, ok := accesslist.ParseHash(arg)
	if !ok {
		writeError(w, http.StatusBadRequest, "want an info hash as 40 hex digits, got "+quote(arg))
		return
	}
	switch r.Method {
	case http.MethodGet:
		c, err := a.swarms.TorrentCounts(ctx, ih)
		if err != nil {
			writeDriverError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"info_hash": hex.EncodeToString(ih[:]),
			"exists":    c.Torrents > 0,
			"seeders":   map[string]int{"ipv4": c.Seeders[models.IPv4], "ipv6": c.Seeders[models.IPv6]},
			"leechers":  map[string]int{"ipv4": c.Leechers[models.IPv4], "ipv6": c.Leechers[models.IPv6]},
		})
	case http.MethodDelete:
		n, err := a.swarms.DropSwarm(ctx, ih)
		if err != nil {
			writeDriverError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"info_hash": hex.EncodeToString(ih[:]), "peers_dropped": n})
	default:
		methodNotAllowed(w, http.MethodGet+", "+http.MethodDelete)
	}
}

func writeDriverError(w http.ResponseWriter, err error) {
	if errors.Is(err, tracker.ErrNotSupported) {
		writeError(w, http.StatusNotImplemented, "the tracker driver cannot do this")
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
