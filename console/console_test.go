package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/console"
	"github.com/breakwater/breakwater/health"
)

// The pages render what the streams hold, with the security headers, and
// without an action form when actions are off.
func TestPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.publishHealth("health.backend.flow", backendEvent("flow", health.BreakerClosed))
	limited := backendEvent("model", health.BreakerClosed)
	limit, budget := 9, 3.4
	limited.ConcurrencyLimit, limited.RetryBudget = &limit, &budget
	e.publishHealth("health.backend.model", limited)
	now := time.Now().UTC()
	e.publishHealth("health.worker.w1", health.WorkerEvent{Worker: "w1", Status: health.WorkerRunning, Version: "1.2.3",
		UptimeSeconds: 60, Tasks: health.Tasks{Done: 7}, Interval: 10, PausedRoutes: []string{"echo"}, At: now})
	e.publishHealth("health.alert.breaker_open_flow", health.AlertEvent{Alert: "breaker_open_flow", Status: health.Firing,
		Backend: "flow", Rule: health.RuleBreakerOpen, Value: 90, Threshold: 60, Worker: "w1", At: now})
	seq := e.deadLetter("code.gen", "task-1", "exhausted", []byte(`{"prompt":"hi"}`), "Authorization", "Bearer sekrit")
	bin := e.deadLetter("blob", "task-2", "poison", []byte{0, 1, 2, 0xff})
	srv := e.console(console.Options{Routes: []console.Route{{Name: "code.gen", Strategy: "failover", Backends: []string{"flow", "coder"}}}})

	for _, tt := range []struct {
		path string
		want []string
		not  []string
	}{
		{"/", []string{"Streams", "TASKS", "DLQ", "breaker_open_flow", "/chart/throughput.svg"}, nil},
		{"/backends", []string{`data-key="flow"`, "closed", "code.gen", "flow → coder", "paused on w1", "/chart/backend/flow.svg",
			"Concurrency limit", "Retry budget left", `<td data-f="limit">9</td><td data-f="retry_budget">3.4</td>`,
			`<td data-f="limit">-</td><td data-f="retry_budget">-</td>`}, []string{"Trip"}},
		{"/workers", []string{`data-key="w1"`, "1.2.3", "echo"}, nil},
		{"/alerts", []string{"breaker_open_flow", "firing", "breaker_open"}, nil},
		{"/dlq", []string{"task-1", "task-2", "code.gen", "exhausted", `href="/dlq/` + itoa(seq) + `"`}, []string{"Count entries"}},
		{"/dlq?type=code.gen", []string{"task-1"}, []string{"task-2"}},
		{"/dlq?reason=poison", []string{"task-2"}, []string{"task-1"}},
		{"/dlq?backend=nope", []string{"no entry"}, []string{"task-1"}},
		{"/dlq/" + itoa(seq), []string{"task-1", "&#34;prompt&#34;: &#34;hi&#34;", "Dlq-Reason", "(json, 15 bytes)"}, []string{"sekrit", "Replay this task"}},
		{"/dlq/" + itoa(bin), []string{"(binary, 4 bytes)", "00 01 02 ff"}, nil},
		{"/schedules", []string{"no periodic schedule"}, nil},
	} {
		code, body, h := get(t, nil, srv.URL+tt.path)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d, want 200\n%s", tt.path, code, body)
			continue
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: CSP %q, want a strict one", tt.path, csp)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, "http://") || strings.Contains(body, "https://") {
			t.Errorf("GET %s: page has an inline script or style, or an asset of another origin", tt.path)
		}
		for _, w := range tt.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in the page", tt.path, w)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(body, n) {
				t.Errorf("GET %s: %q in the page, want none", tt.path, n)
			}
		}
	}
	for _, p := range []string{"/chart/throughput.svg", "/chart/latency.svg", "/chart/backend/flow.svg", "/static/app.js", "/static/style.css"} {
		if code, body, _ := get(t, nil, srv.URL+p); code != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d (%d bytes), want 200 with a body", p, code, len(body))
		}
	}
	for _, p := range []string{"/nope", "/dlq/999999", "/api/dlq/999999"} {
		if code, _, _ := get(t, nil, srv.URL+p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
	if code, _, _ := get(t, nil, srv.URL+"/dlq?reason=bogus"); code != http.StatusBadRequest {
		t.Errorf("GET /dlq?reason=bogus: %d, want 400", code)
	}
}

// The JSON API answers what the contract lists, pages the DLQ by cursor,
// and never shows a secret header.
func TestAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.publishHealth("health.backend.flow", backendEvent("flow", health.BreakerOpen))
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, e.deadLetter("echo", "t"+itoa(uint64(i)), "rejected", []byte("x"), "X-Api-Key", "sekrit"))
	}
	srv := e.console(console.Options{})

	waitFor(t, 10*time.Second, "the backend in /api/backends", func() (bool, string) {
		_, body, _ := get(t, nil, srv.URL+"/api/backends")
		return strings.Contains(body, `"breaker": "open"`), body
	})
	for _, p := range []string{"/api/workers", "/api/alerts", "/api/streams", "/api/schedules", "/api/session"} {
		code, body, h := get(t, nil, srv.URL+p)
		if code != http.StatusOK || h.Get("Content-Type") != "application/json" || !json.Valid([]byte(body)) {
			t.Errorf("GET %s: %d %s %q, want 200 and JSON", p, code, h.Get("Content-Type"), body)
		}
	}

	// Pages of two, each from the cursor the last gave.
	var got []uint64
	after := uint64(0)
	for range 10 {
		_, body, _ := get(t, nil, srv.URL+"/api/dlq?limit=2&after="+itoa(after))
		var p console.DLQPage
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if len(p.Entries) > 2 {
			t.Fatalf("page of %d entries, want at most 2", len(p.Entries))
		}
		for _, en := range p.Entries {
			got = append(got, en.Seq)
		}
		if p.Next == 0 {
			break
		}
		after = p.Next
	}
	if len(got) != len(seqs) {
		t.Fatalf("paged through %v, want %v", got, seqs)
	}
	for i := range got {
		if got[i] != seqs[i] {
			t.Fatalf("paged through %v, want %v", got, seqs)
		}
	}

	code, body, _ := get(t, nil, srv.URL+"/api/dlq/"+itoa(seqs[0]))
	var d console.Detail
	if err := json.Unmarshal([]byte(body), &d); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/dlq/%d: %d %v %s", seqs[0], code, err, body)
	}
	if d.ID != "t0" || d.Reason != "rejected" || string(d.Data) != "x" || d.PayloadKind != "text" {
		t.Errorf("entry = %+v, want t0 rejected with payload x", d)
	}
	if strings.Contains(body, "sekrit") {
		t.Errorf("entry shows a secret header: %s", body)
	}
}

// Read-only: every action answers 403, whatever it is and whatever it
// carries, and changes nothing.
func TestActionsOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seq := e.deadLetter("echo", "t1", "rejected", []byte("x"))
	srv := e.console(console.Options{})
	token := csrf(t, srv.URL)
	for _, p := range []string{"/api/dlq/" + itoa(seq) + "/replay", "/api/dlq/" + itoa(seq) + "/purge", "/api/dlq/replay",
		"/api/dlq/purge", "/api/routes/echo/pause", "/api/backends/flow/trip", "/api/schedules/x/remove", "/api/nope"} {
		code, body, _ := post(t, nil, srv.URL+p, "csrf="+token, "X-CSRF-Token", token)
		if code != http.StatusForbidden || !strings.Contains(body, "--allow-actions") {
			t.Errorf("POST %s: %d %s, want 403 naming --allow-actions", p, code, body)
		}
	}
	if n := e.msgs("DLQ"); n != 1 {
		t.Errorf("DLQ holds %d entries, want 1", n)
	}
}

// With actions on, a POST needs the CSRF token (or a bearer token) and
// must not come from another origin; then a replay puts the task back.
func TestActionsCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := e.console(console.Options{AllowActions: true})
	token := csrf(t, srv.URL)
	seq := e.deadLetter("echo", "t1", "rejected", []byte("x"))
	path := srv.URL + "/api/dlq/" + itoa(seq) + "/replay"

	for _, tt := range []struct {
		name string
		form string
		hdr  []string
	}{
		{"no token", "", nil},
		{"wrong token", "csrf=nope", nil},
		{"other origin", "csrf=" + token, []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}},
	} {
		if code, body, _ := post(t, nil, path, tt.form, tt.hdr...); code != http.StatusForbidden {
			t.Errorf("%s: POST %d %s, want 403", tt.name, code, body)
		}
	}
	if n := e.msgs("TASKS"); n != 0 {
		t.Fatalf("TASKS holds %d after refused replays, want 0", n)
	}

	// A dry run counts and changes nothing.
	code, body, _ := post(t, nil, srv.URL+"/api/dlq/replay", "type=echo&dry_run=1", "X-CSRF-Token", token)
	var res console.ActionResult
	if err := json.Unmarshal([]byte(body), &res); code != http.StatusOK || err != nil || res.Selected == nil || *res.Selected != 1 {
		t.Fatalf("dry run: %d %s, want 200 selecting 1", code, body)
	}
	if n := e.msgs("DLQ"); n != 1 {
		t.Fatalf("DLQ holds %d after a dry run, want 1", n)
	}

	// A form from the page: a redirect back with the message.
	code, _, h := post(t, nil, path, url.Values{"csrf": {token}, "return": {"/dlq"}}.Encode())
	if code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/dlq?msg=") {
		t.Fatalf("replay form: %d Location %q, want 303 to /dlq", code, h.Get("Location"))
	}
	if n := e.msgs("TASKS"); n != 1 {
		t.Errorf("TASKS holds %d after the replay, want 1", n)
	}
	if n := e.msgs("DLQ"); n != 0 {
		t.Errorf("DLQ holds %d after the replay, want 0", n)
	}
	// An open redirect is refused: a foreign return goes home.
	seq = e.deadLetter("echo", "t2", "rejected", []byte("x"))
	_, _, h = post(t, nil, srv.URL+"/api/dlq/"+itoa(seq)+"/purge", url.Values{"csrf": {token}, "return": {"//evil.example/x"}}.Encode())
	if loc := h.Get("Location"); !strings.HasPrefix(loc, "/?msg=") {
		t.Errorf("purge with a foreign return: Location %q, want /", loc)
	}
}

// With a token, every request needs it: a bearer token or the login
// cookie; a wrong one is refused.
func TestToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const secret = "s3cret-token"
	srv := e.console(console.Options{AllowActions: true, Token: secret})
	if code, _, _ := get(t, nil, srv.URL+"/api/backends"); code != http.StatusUnauthorized {
		t.Errorf("API without the token: %d, want 401", code)
	}
	if code, _, _ := get(t, nil, srv.URL+"/api/backends", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("API with a wrong token: %d, want 401", code)
	}
	if code, _, h := get(t, nil, srv.URL+"/backends"); code != http.StatusSeeOther || h.Get("Location") != "/login" {
		t.Errorf("page without the token: %d to %q, want 303 to /login", code, h.Get("Location"))
	}
	bearer := []string{"Authorization", "Bearer " + secret}
	if code, _, _ := get(t, nil, srv.URL+"/api/backends", bearer...); code != http.StatusOK {
		t.Errorf("API with the token: %d, want 200", code)
	}
	// A bearer token is no ambient credential: no CSRF token needed.
	if code, body, _ := post(t, nil, srv.URL+"/api/dlq/replay", "dry_run=1", bearer...); code != http.StatusOK {
		t.Errorf("action with the bearer token: %d %s, want 200", code, body)
	}

	token := csrf(t, srv.URL, bearer...)
	if code, _, _ := post(t, nil, srv.URL+"/login", url.Values{"csrf": {token}, "token": {"wrong"}}.Encode()); code != http.StatusUnauthorized {
		t.Errorf("login with a wrong token: %d, want 401", code)
	}
	code, _, h := post(t, nil, srv.URL+"/login", url.Values{"csrf": {token}, "token": {secret}}.Encode())
	cookie := h.Get("Set-Cookie")
	if code != http.StatusSeeOther || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") || strings.Contains(cookie, secret) {
		t.Fatalf("login: %d Set-Cookie %q, want 303 and an HttpOnly, SameSite cookie without the token", code, cookie)
	}
	name, value, _ := strings.Cut(strings.SplitN(cookie, ";", 2)[0], "=")
	if code, _, _ := get(t, nil, srv.URL+"/backends", "Cookie", name+"="+value); code != http.StatusOK {
		t.Errorf("page with the login cookie: %d, want 200", code)
	}
}

// On a loopback listener a request for another host name is refused, so
// that a page cannot reach the console by DNS rebinding.
func TestLoopbackHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := e.console(console.Options{LoopbackOnly: true})
	if code, _, _ := get(t, nil, srv.URL+"/"); code != http.StatusOK {
		t.Errorf("GET / on 127.0.0.1: %d, want 200", code)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	req.Host = "rebind.evil.example"
	if code, _, _ := do(t, nil, req); code != http.StatusMisdirectedRequest {
		t.Errorf("GET / for host rebind.evil.example: %d, want 421", code)
	}
}

// /api/events sends the current rows first, then each HEALTH event as it
// is stored.
func TestEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.publishHealth("health.backend.flow", backendEvent("flow", health.BreakerClosed))
	srv := e.console(console.Options{})
	waitFor(t, 10*time.Second, "the console to read HEALTH", func() (bool, string) {
		_, body, _ := get(t, nil, srv.URL+"/api/backends")
		return strings.Contains(body, `"flow"`), body
	})

	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodGet, srv.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	events := make(chan console.Event, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev console.Event
			if json.Unmarshal([]byte(data), &ev) == nil {
				events <- ev
			}
		}
	}()
	next := func(what string, match func(console.Event) bool) {
		t.Helper()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("stream ended waiting for %s", what)
				}
				if match(ev) {
					return
				}
			case <-c.Done():
				t.Fatalf("no event %s", what)
			}
		}
	}
	next("with the current row of flow", func(ev console.Event) bool {
		return ev.Kind == "backend" && ev.Key == "flow" && ev.Cells["breaker"] == "closed"
	})
	e.publishHealth("health.backend.flow", backendEvent("flow", health.BreakerOpen))
	next("with flow's breaker open", func(ev console.Event) bool {
		return ev.Kind == "backend" && ev.Key == "flow" && ev.Cells["breaker"] == "open" && ev.Cells["state"] == "unhealthy"
	})
	next("with the stream figures", func(ev console.Event) bool { return ev.Kind == "stream" && ev.Key == "DLQ" })
}

// A filter the server cannot apply (reason) over more entries than one
// page reads: pages end early with a cursor, and following the cursors
// finds every match, in order, none twice.
func TestDLQPagesRareMatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fillDLQ(12_000) // every thousandth is poison: 12
	srv := e.console(console.Options{})
	var ids []string
	after, pages := uint64(0), 0
	for {
		code, body, _ := get(t, nil, srv.URL+"/api/dlq?reason=poison&limit=5&after="+itoa(after))
		var p console.DLQPage
		if err := json.Unmarshal([]byte(body), &p); code != http.StatusOK || err != nil {
			t.Fatalf("page after %d: %d %v %s", after, code, err, body)
		}
		pages++
		for _, en := range p.Entries {
			ids = append(ids, en.ID)
		}
		if p.Next == 0 {
			break
		}
		if p.Next <= after || pages > 100 {
			t.Fatalf("cursor %d after %d (page %d)", p.Next, after, pages)
		}
		after = p.Next
	}
	var want []string
	for i := 999; i < 12_000; i += 1000 {
		want = append(want, "t"+strconv.Itoa(i))
	}
	if !slices.Equal(ids, want) {
		t.Errorf("found %v in %d pages, want %v", ids, pages, want)
	}
}
