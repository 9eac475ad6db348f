package console

import (
	"bytes"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/redact"
	"github.com/breakwater/breakwater/schedule"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pageNames are the templates under templates/, each rendered inside
// layout.html.
var pageNames = []string{"overview", "backends", "workers", "alerts", "dlq", "entry", "schedules", "login", "error"}

// pages holds one parsed template set per page.
type pages struct{ t map[string]*template.Template }

func loadPages() (*pages, error) {
	funcs := template.FuncMap{
		"cell":  func(r row, key string) string { return r.Cells[key] },
		"stamp": stamp,
		"join":  strings.Join,
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/table.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		p.t[name] = t
	}
	return p, nil
}

// nav is the menu, in order.
var nav = []struct{ Path, Title string }{
	{"/", "Overview"}, {"/backends", "Backends"}, {"/workers", "Workers"}, {"/alerts", "Alerts"},
	{"/dlq", "DLQ"}, {"/schedules", "Schedules"},
}

// render executes page with data (a map the page reads), adding what the
// layout needs; it is rendered to a buffer first so that a failure is a
// clean 500.
func (c *Console) render(w http.ResponseWriter, r *http.Request, page string, data map[string]any) {
	data["Nav"] = nav
	data["Path"] = r.URL.Path
	data["CSRF"] = c.csrf
	data["Actions"] = c.o.AllowActions
	data["Msg"] = r.URL.Query().Get("msg")
	data["Now"] = stamp(c.o.Now())
	var buf bytes.Buffer
	if err := c.pages.t[page].Execute(&buf, data); err != nil {
		c.o.Logger.Error("console: render", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// table is what templates/table.html renders.
type table struct {
	Kind    EventKind
	Columns []column
	Rows    []row
	Empty   string
	// FiringOnly: live updates keep only firing alerts in the table.
	FiringOnly bool
}

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/icon.svg", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /{$}", c.overviewPage)
	mux.HandleFunc("GET /backends", c.backendsPage)
	mux.HandleFunc("GET /workers", c.workersPage)
	mux.HandleFunc("GET /alerts", c.alertsPage)
	mux.HandleFunc("GET /dlq", c.dlqPage)
	mux.HandleFunc("GET /dlq/{seq}", c.entryPage)
	mux.HandleFunc("GET /schedules", c.schedulesPage)
	mux.HandleFunc("/login", c.login)
	mux.HandleFunc("GET /chart/throughput.svg", c.throughputChart)
	mux.HandleFunc("GET /chart/latency.svg", c.latencyChart)
	mux.HandleFunc("GET /chart/backend/{name}", c.latencyChart)

	mux.HandleFunc("GET /api/session", c.apiSession)
	mux.HandleFunc("GET /api/backends", c.apiBackends)
	mux.HandleFunc("GET /api/workers", c.apiWorkers)
	mux.HandleFunc("GET /api/alerts", c.apiAlerts)
	mux.HandleFunc("GET /api/streams", c.apiStreams)
	mux.HandleFunc("GET /api/dlq", c.apiDLQ)
	mux.HandleFunc("GET /api/dlq/{seq}", c.apiEntry)
	mux.HandleFunc("GET /api/schedules", c.apiSchedules)
	mux.HandleFunc("GET /api/events", c.apiEvents)

	mux.HandleFunc("POST /api/dlq/{op}", c.actDLQ)
	mux.HandleFunc("POST /api/dlq/{seq}/{op}", c.actEntry)
	mux.HandleFunc("POST /api/routes/{name}/{op}", c.actRoute)
	mux.HandleFunc("POST /api/backends/{name}/{op}", c.actBackend)
	mux.HandleFunc("POST /api/schedules/{name}/{op}", c.actSchedule)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpError(w, r, http.StatusNotFound, "no such page")
	})
	return c.secure(mux)
}

func rowsOf[T any](evs []T, f func(T) Event) []row {
	out := make([]row, 0, len(evs))
	for _, e := range evs {
		out = append(out, f(e).row())
	}
	return out
}

func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := c.reqContext(r)
	defer cancel()
	sn := c.state.snapshot()
	streams, err := c.streams(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var dlqSize uint64
	for _, s := range streams {
		if s.Role == "dlq" {
			dlqSize = s.Messages
		}
	}
	firing := slices.DeleteFunc(slices.Clone(sn.Alerts), func(a health.AlertEvent) bool { return a.Status != health.Firing })
	c.render(w, r, "overview", map[string]any{
		"Title":   "Overview",
		"Stats":   table{Kind: KindStat, Columns: statColumns, Rows: rowsOf(statRows(sn.Done, sn.Failed, dlqSize, len(firing)), func(e Event) Event { return e })},
		"Streams": table{Kind: KindStream, Columns: streamColumns, Rows: rowsOf(streams, streamRow), Empty: "no streams: has a worker started on this server?"},
		"Alerts":  table{Kind: KindAlert, Columns: alertColumns, Rows: rowsOf(firing, alertRow), Empty: "no alert firing", FiringOnly: true},
	})
}

// routeRow is a row of the routes table.
type routeRow struct {
	Name, Strategy, Backends, Paused string
}

func (c *Console) routeRows(workers []health.WorkerEvent) []routeRow {
	paused := map[string][]string{}
	for _, w := range workers {
		if w.Status != health.WorkerRunning {
			continue
		}
		for _, r := range w.PausedRoutes {
			paused[r] = append(paused[r], w.Worker)
		}
	}
	var out []routeRow
	seen := map[string]bool{}
	for _, r := range c.o.Routes {
		seen[r.Name] = true
		out = append(out, routeRow{Name: r.Name, Strategy: orDash(r.Strategy), Backends: strings.Join(r.Backends, " → "), Paused: pausedCell(paused[r.Name])})
	}
	for name, ws := range paused {
		if !seen[name] {
			out = append(out, routeRow{Name: name, Strategy: "-", Backends: "-", Paused: pausedCell(ws)})
		}
	}
	slices.SortFunc(out, func(a, b routeRow) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func pausedCell(workers []string) string {
	if len(workers) == 0 {
		return "no"
	}
	slices.Sort(workers)
	return "paused on " + strings.Join(workers, ", ")
}

func (c *Console) backendsPage(w http.ResponseWriter, r *http.Request) {
	sn := c.state.snapshot()
	names := make([]string, 0, len(sn.Backends))
	for _, b := range sn.Backends {
		names = append(names, b.Backend)
	}
	c.render(w, r, "backends", map[string]any{
		"Title":    "Backends",
		"Backends": table{Kind: KindBackend, Columns: backendColumns, Rows: rowsOf(sn.Backends, backendRow), Empty: "no backend has reported yet"},
		"Names":    names,
		"Routes":   c.routeRows(sn.Workers),
	})
}

func (c *Console) workersPage(w http.ResponseWriter, r *http.Request) {
	sn := c.state.snapshot()
	now := c.o.Now()
	c.render(w, r, "workers", map[string]any{
		"Title":   "Workers",
		"Workers": table{Kind: KindWorker, Columns: workerColumns, Rows: rowsOf(sn.Workers, func(e health.WorkerEvent) Event { return workerRow(e, now) }), Empty: "no worker heartbeat"},
	})
}

func (c *Console) alertsPage(w http.ResponseWriter, r *http.Request) {
	sn := c.state.snapshot()
	c.render(w, r, "alerts", map[string]any{
		"Title":  "Alerts",
		"Alerts": table{Kind: KindAlert, Columns: alertColumns, Rows: rowsOf(sn.Alerts, alertRow), Empty: "no alert has fired"},
	})
}

// Entry is a DLQ entry as the list shows it.
type Entry struct {
	Seq      uint64    `json:"seq"`
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Reason   string    `json:"reason"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	Backends []string  `json:"backends"`
	Replays  int       `json:"replays"`
	FailedAt time.Time `json:"failed_at"`
	Stored   time.Time `json:"stored"`
}

func (c *Console) entry(i *dlq.Item) Entry {
	return Entry{Seq: i.Seq, ID: i.ID(), Type: i.Type(c.o.Topology), Reason: string(i.Reason()), Error: i.Error(),
		Attempts: i.Attempts(), Backends: i.Backends(), Replays: i.Replays(), FailedAt: i.FailedAt(), Stored: i.Time}
}

// dlqQuery is a DLQ page request: the filter, the cursor and the page size.
type dlqQuery struct {
	filter dlq.Filter
	after  uint64
	limit  int
	// values are the query's filter fields as given, for links and forms.
	values url.Values
}

// maxLimit bounds a DLQ page.
const maxLimit = 500

// parseDLQQuery reads type, reason, backend, since, until, limit and
// after; a bad value is an error for a 400.
func parseDLQQuery(q url.Values, now time.Time) (dlqQuery, error) {
	var d dlqQuery
	d.values = url.Values{}
	list := func(key string) []string {
		var out []string
		for _, v := range q[key] {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					out = append(out, s)
				}
			}
		}
		if len(out) > 0 {
			d.values.Set(key, strings.Join(out, ","))
		}
		return out
	}
	d.filter.Types = list("type")
	for _, t := range d.filter.Types {
		if schedule.ValidType(t) != nil {
			return d, fmt.Errorf("type %q is not a task type", t)
		}
	}
	for _, r := range list("reason") {
		if !slices.Contains(dlq.Reasons(), dlq.Reason(r)) {
			return d, fmt.Errorf("reason %q is not one of the contract's", r)
		}
		d.filter.Reasons = append(d.filter.Reasons, dlq.Reason(r))
	}
	d.filter.Backends = list("backend")
	for _, key := range []string{"since", "until"} {
		v := strings.TrimSpace(q.Get(key))
		if v == "" {
			continue
		}
		t, err := pointInTime(v, now)
		if err != nil {
			return d, fmt.Errorf("%s: %w", key, err)
		}
		d.values.Set(key, v)
		if key == "since" {
			d.filter.Since = t
		} else {
			d.filter.Until = t
		}
	}
	d.limit = 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return d, fmt.Errorf("limit %q: want 1 to %d", v, maxLimit)
		}
		d.limit = n
		d.values.Set("limit", v)
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return d, fmt.Errorf("after %q: want a stream sequence", v)
		}
		d.after = n
	}
	return d, nil
}

// pointInTime reads a duration ago ("1h") or an RFC 3339 time.
func pointInTime(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, errors.New("want a duration ago (1h) or an RFC 3339 time")
	}
	return t, nil
}

// dlqEntries reads the page of the DLQ that r's query asks for, as the
// pages and the API show its entries; on a bad query or a failed read it
// has answered r and returns false.
func (c *Console) dlqEntries(w http.ResponseWriter, r *http.Request) (dlqQuery, DLQPage, bool) {
	q, err := parseDLQQuery(r.URL.Query(), c.o.Now())
	if err != nil {
		httpError(w, r, http.StatusBadRequest, err.Error())
		return q, DLQPage{}, false
	}
	ctx, cancel := c.reqContext(r)
	defer cancel()
	page, err := c.admin.Page(ctx, q.filter, q.after, q.limit)
	if err != nil {
		c.fail(w, r, err)
		return q, DLQPage{}, false
	}
	out := DLQPage{Entries: make([]Entry, 0, len(page.Items)), Next: page.Next, Scanned: page.Scanned}
	for _, i := range page.Items {
		out.Entries = append(out.Entries, c.entry(i))
	}
	return q, out, true
}

func (c *Console) dlqPage(w http.ResponseWriter, r *http.Request) {
	q, page, ok := c.dlqEntries(w, r)
	if !ok {
		return
	}
	entries := page.Entries
	data := map[string]any{
		"Title": "DLQ", "Entries": entries, "Reasons": dlq.Reasons(),
		"Type": q.values.Get("type"), "Reason": q.values.Get("reason"), "Backend": q.values.Get("backend"),
		"Since": q.values.Get("since"), "Until": q.values.Get("until"), "Limit": q.limit,
		"Filter": q.values.Encode(), "Paged": q.after > 0, "Scanned": page.Scanned,
	}
	if page.Next > 0 {
		next := url.Values{}
		for k, v := range q.values {
			next[k] = v
		}
		next.Set("after", strconv.FormatUint(page.Next, 10))
		data["Next"] = "/dlq?" + next.Encode()
	}
	if op := r.URL.Query().Get("dry"); op == "replay" || op == "purge" {
		data["DryOp"], data["DryCount"] = op, r.URL.Query().Get("count")
	}
	c.render(w, r, "dlq", data)
}

// Detail is one DLQ entry whole, as its page shows it.
type Detail struct {
	Entry
	Subject string              `json:"subject"`
	Header  map[string][]string `json:"header"` // redacted again, for entries stored by older workers
	History []dlq.Record        `json:"history"`
	// Data is the payload (base64 in JSON); Payload is how the page
	// shows it: pretty JSON, text, or a hex dump (PayloadKind).
	Data        []byte      `json:"data"`
	Payload     string      `json:"-"`
	PayloadKind PayloadKind `json:"payload_kind"`
}

// PayloadKind says how a DLQ entry's payload is shown.
type PayloadKind string

// The ways a payload is shown.
const (
	PayloadJSON   PayloadKind = "json"   // indented
	PayloadText   PayloadKind = "text"   // as is
	PayloadBinary PayloadKind = "binary" // a hex dump
)

func (c *Console) detail(i *dlq.Item) Detail {
	deny, _ := redact.NewHeaders()
	d := Detail{Entry: c.entry(i), Subject: i.Subject, Header: deny.Copy(i.Header), Data: i.Data}
	d.History, _ = i.History()
	switch {
	case json.Valid(i.Data):
		var b bytes.Buffer
		_ = json.Indent(&b, i.Data, "", "  ")
		d.Payload, d.PayloadKind = b.String(), PayloadJSON
	case utf8.Valid(i.Data) && !bytes.ContainsFunc(i.Data, func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' && r != '\r' }):
		d.Payload, d.PayloadKind = string(i.Data), PayloadText
	default:
		d.Payload, d.PayloadKind = hex.Dump(i.Data), PayloadBinary
	}
	return d
}

func (c *Console) entryPage(w http.ResponseWriter, r *http.Request) {
	seq, i, ok := c.entryAt(w, r)
	if !ok {
		return
	}
	d := c.detail(i)
	keys := make([]string, 0, len(d.Header))
	for k := range d.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	hdrs := make([][2]string, 0, len(keys))
	for _, k := range keys {
		for _, v := range d.Header[k] {
			hdrs = append(hdrs, [2]string{k, v})
		}
	}
	c.render(w, r, "entry", map[string]any{"Title": fmt.Sprintf("DLQ entry %d", seq), "E": d, "Headers": hdrs})
}

// ScheduleView is a periodic schedule as listed.
type ScheduleView struct {
	Name    string    `json:"name"`
	Type    string    `json:"type"`
	Pattern string    `json:"pattern"`
	Next    time.Time `json:"next,omitzero"`
	Created time.Time `json:"created"`
}

func (c *Console) scheduleViews(r *http.Request) ([]ScheduleView, error) {
	ctx, cancel := c.reqContext(r)
	defer cancel()
	list, err := c.sched.List(ctx)
	if err != nil {
		return nil, err
	}
	now := c.o.Now()
	out := make([]ScheduleView, 0, len(list))
	for _, s := range list {
		v := ScheduleView{Name: s.Name, Type: s.Type, Pattern: s.Spec.String(), Created: s.Created}
		if next, ok := s.Next(now); ok {
			v.Next = next
		}
		out = append(out, v)
	}
	return out, nil
}

func (c *Console) schedulesPage(w http.ResponseWriter, r *http.Request) {
	list, err := c.scheduleViews(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, "schedules", map[string]any{"Title": "Schedules", "Schedules": list})
}
