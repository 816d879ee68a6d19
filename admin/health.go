package admin

import (
	"context"
	"net/http"
	"time"
)

// Check is one readiness check: nil when that part of the tracker is ready, else why not.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Healthz answers 200 while the process serves: a liveness probe.
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// Readyz answers 200 when every check passes (each within timeout), else 503 with the checks
// that failed and why: a readiness probe for load balancers.
func Readyz(timeout time.Duration, checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		failed := map[string]string{}
		for _, c := range checks {
			if err := c.Run(ctx); err != nil {
				failed[c.Name] = err.Error()
			}
		}
		if len(failed) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failed": failed})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}
