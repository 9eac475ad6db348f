package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/schedule"
)

// reqContext bounds a request's NATS work by RequestTimeout.
func (c *Console) reqContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), c.o.RequestTimeout)
}

// wantsJSON reports whether the answer to r is JSON (the API, a script)
// rather than a page.
func wantsJSON(r *http.Request) bool {
	if len(r.URL.Path) >= 5 && r.URL.Path[:5] == "/api/" {
		// A form posted from a page wants the page back.
		return r.Method != http.MethodPost || r.Header.Get("X-CSRF-Token") != "" || r.Header.Get("Authorization") != "" ||
			r.PostFormValue("csrf") == ""
	}
	return false
}

// apiError is the body of every API error.
type apiError struct {
	Error string `json:"error"`
}

// httpError answers with status and msg: JSON for the API, a page
// otherwise. msg must not hold a secret (it never does: it is ours).
func httpError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) || r.Method == http.MethodPost {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(apiError{Error: msg})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s: %s\n", status, http.StatusText(status), msg)
}

// fail answers an error of the work: 404 for what does not exist, 504
// for a timeout, 502 otherwise (the server failed us). The error is
// logged; the answer names its kind only.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, dlq.ErrNotFound), errors.Is(err, schedule.ErrNotFound), errors.Is(err, jetstream.ErrMsgNotFound):
		httpError(w, r, http.StatusNotFound, "not found")
	case errors.Is(err, jetstream.ErrStreamNotFound):
		httpError(w, r, http.StatusServiceUnavailable, "stream not found: has a worker started on this server, with the same prefix?")
	case errors.Is(err, context.DeadlineExceeded):
		c.o.Logger.Warn("console: request timed out", "path", r.URL.Path, "err", err)
		httpError(w, r, http.StatusGatewayTimeout, "the NATS server did not answer in time")
	default:
		c.o.Logger.Warn("console: request failed", "path", r.URL.Path, "err", err)
		httpError(w, r, http.StatusBadGateway, "the NATS server failed the request (the console's log says why)")
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Session is the body of GET /api/session: what a script needs to act.
type Session struct {
	CSRF    string `json:"csrf"`
	Actions bool   `json:"actions"`
}

func (c *Console) apiSession(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, Session{CSRF: c.csrf, Actions: c.o.AllowActions})
}

func (c *Console) apiBackends(w http.ResponseWriter, _ *http.Request) {
	sn := c.state.snapshot()
	type routeJSON struct {
		Route
		PausedOn []string `json:"paused_on"`
	}
	paused := map[string][]string{}
	for _, wk := range sn.Workers {
		if wk.Status == health.WorkerRunning {
			for _, r := range wk.PausedRoutes {
				paused[r] = append(paused[r], wk.Worker)
			}
		}
	}
	routes := []routeJSON{}
	seen := map[string]bool{}
	for _, r := range c.o.Routes {
		seen[r.Name] = true
		routes = append(routes, routeJSON{Route: r, PausedOn: append([]string{}, paused[r.Name]...)})
	}
	for name, ws := range paused {
		if !seen[name] {
			routes = append(routes, routeJSON{Route: Route{Name: name, Backends: []string{}}, PausedOn: ws})
		}
	}
	writeJSON(w, map[string]any{"backends": nonNil(sn.Backends), "routes": routes})
}

func (c *Console) apiWorkers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"workers": nonNil(c.state.snapshot().Workers)})
}

func (c *Console) apiAlerts(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"alerts": nonNil(c.state.snapshot().Alerts)})
}

func (c *Console) apiStreams(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := c.reqContext(r)
	defer cancel()
	st, err := c.streams(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	done, failed := c.state.snapshot().Done, c.state.snapshot().Failed
	writeJSON(w, map[string]any{"streams": nonNil(st), "done_per_s": done, "failed_per_s": failed})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// DLQPage is the body of GET /api/dlq.
type DLQPage struct {
	Entries []Entry `json:"entries"`
	// Next is the after= of the next page; 0: none.
	Next    uint64 `json:"next"`
	Scanned int    `json:"scanned"`
}

func (c *Console) apiDLQ(w http.ResponseWriter, r *http.Request) {
	if _, page, ok := c.dlqEntries(w, r); ok {
		writeJSON(w, page)
	}
}

func (c *Console) apiEntry(w http.ResponseWriter, r *http.Request) {
	if _, i, ok := c.entryAt(w, r); ok {
		writeJSON(w, c.detail(i))
	}
}

// entryAt reads the DLQ entry the path's {seq} names; when it cannot, it
// has answered r with why (a bad sequence, or the admin's error).
func (c *Console) entryAt(w http.ResponseWriter, r *http.Request) (uint64, *dlq.Item, bool) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		httpError(w, r, http.StatusBadRequest, "not a DLQ sequence")
		return 0, nil, false
	}
	ctx, cancel := c.reqContext(r)
	defer cancel()
	i, err := c.admin.Get(ctx, seq)
	if err != nil {
		c.fail(w, r, err)
		return 0, nil, false
	}
	return seq, i, true
}

func (c *Console) apiSchedules(w http.ResponseWriter, r *http.Request) {
	list, err := c.scheduleViews(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	writeJSON(w, map[string]any{"schedules": list})
}

// keepAlive is how often an idle event stream gets a comment, so that
// proxies and the browser keep it open.
const keepAlive = 15 * time.Second

// apiEvents streams Events as server-sent events: first the current row of
// every backend, worker and alert, then each change as it is stored in
// HEALTH, and the stream figures every StreamsInterval.
func (c *Console) apiEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, r, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, cancel, err := c.state.subscribe()
	if err != nil {
		httpError(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	send := func(e Event) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "data: %s\n\n", b)
		return err
	}
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	sn := c.state.snapshot()
	now := c.o.Now()
	for _, b := range sn.Backends {
		_ = send(backendRow(b))
	}
	for _, wk := range sn.Workers {
		_ = send(workerRow(wk, now))
	}
	for _, a := range sn.Alerts {
		_ = send(alertRow(a))
	}
	fl.Flush()
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e := <-ch:
			if send(e) != nil {
				return
			}
			fl.Flush()
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
