package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/health"
)

// Every handler here runs after secure: actions are allowed, the caller
// authenticated and the CSRF token checked.

// ActionResult is the body of an action's JSON answer.
type ActionResult struct {
	OK bool `json:"ok"`
	// Message says what was done, as the page shows it.
	Message string `json:"message"`
	// Selected, for a dry run, is how many entries the action would
	// take; Summary is what a bulk replay or purge did.
	Selected *int         `json:"selected,omitempty"`
	Summary  *dlq.Summary `json:"summary,omitempty"`
	// Replies are the workers' answers to a control.
	Replies []health.ControlReply `json:"replies,omitempty"`
}

// done answers an action: JSON for a script; for a form, a redirect to
// the page it came from (field return, a local path) with the message.
func (c *Console) done(w http.ResponseWriter, r *http.Request, res ActionResult, extra url.Values) {
	if wantsJSON(r) {
		writeJSON(w, res)
		return
	}
	back := r.PostFormValue("return")
	if !strings.HasPrefix(back, "/") || strings.HasPrefix(back, "//") || strings.HasPrefix(back, "/\\") {
		back = "/"
	}
	u, err := url.Parse(back)
	if err != nil {
		u = &url.URL{Path: "/"}
	}
	q := u.Query()
	q.Set("msg", res.Message)
	for k, v := range extra {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// formQuery merges the filter fields of a form with the URL's query.
func formQuery(r *http.Request) url.Values {
	_ = r.ParseForm()
	return r.Form
}

// actDLQ is a bulk replay or purge of the entries a filter selects
// (type, reason, backend, since, until, limit); with dry_run=1 it only
// counts them.
func (c *Console) actDLQ(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	if op != "replay" && op != "purge" {
		httpError(w, r, http.StatusNotFound, "no such action")
		return
	}
	form := formQuery(r)
	q, err := parseDLQQuery(form, c.o.Now())
	if err != nil {
		httpError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	f := q.filter
	if form.Get("limit") != "" {
		f.Limit = q.limit
	}
	dry := form.Get("dry_run") == "1" || form.Get("dry_run") == "true"
	// A bulk run may take long: it is bounded by the request, not by
	// RequestTimeout, and stops cleanly when the caller goes away.
	ctx := r.Context()
	var sum dlq.Summary
	if op == "replay" {
		sum, err = c.admin.Replay(ctx, dlq.ReplayOptions{Filter: f, DryRun: dry})
	} else {
		sum, err = c.admin.Purge(ctx, dlq.PurgeOptions{Filter: f, DryRun: dry})
	}
	if err != nil && sum.Done() == 0 && sum.Selected == 0 {
		c.fail(w, r, err)
		return
	}
	if dry {
		n := sum.Selected
		c.done(w, r, ActionResult{OK: true, Selected: &n, Message: fmt.Sprintf("%d entries would be %s", n, pastTense(op))},
			url.Values{"dry": {op}, "count": {strconv.Itoa(n)}})
		return
	}
	res := ActionResult{OK: err == nil, Summary: &sum,
		Message: fmt.Sprintf("%s: %d replayed, %d skipped (result already stored), %d purged, %d failed", op, sum.Replayed, sum.Skipped, sum.Purged, sum.Failed)}
	if err != nil {
		c.o.Logger.Warn("console: bulk "+op, "err", err)
		res.Message += " (" + err.Error() + ")"
	}
	c.done(w, r, res, nil)
}

func pastTense(op string) string {
	if op == "replay" {
		return "replayed"
	}
	return "purged"
}

// actEntry replays or purges one entry.
func (c *Console) actEntry(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	op := r.PathValue("op")
	if err != nil || seq == 0 || (op != "replay" && op != "purge") {
		httpError(w, r, http.StatusNotFound, "no such action")
		return
	}
	ctx, cancel := c.reqContext(r)
	defer cancel()
	i, err := c.admin.Get(ctx, seq)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var msg string
	if op == "replay" {
		out, err := c.admin.ReplayOne(ctx, i)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		msg = fmt.Sprintf("entry %d (task %s): %s", seq, i.ID(), out)
	} else {
		if err := c.admin.PurgeOne(ctx, i); err != nil {
			c.fail(w, r, err)
			return
		}
		msg = fmt.Sprintf("entry %d (task %s): purged", seq, i.ID())
	}
	c.done(w, r, ActionResult{OK: true, Message: msg}, nil)
}

// actRoute pauses or resumes a route on every worker.
func (c *Console) actRoute(w http.ResponseWriter, r *http.Request) {
	ops := map[string]string{"pause": "route.pause", "resume": "route.resume"}
	c.control(w, r, ops, health.ControlRequest{Route: nameOf(r, "route")})
}

// actBackend trips or resets a backend's breaker on every worker.
func (c *Console) actBackend(w http.ResponseWriter, r *http.Request) {
	ops := map[string]string{"trip": "breaker.trip", "reset": "breaker.reset"}
	c.control(w, r, ops, health.ControlRequest{Backend: nameOf(r, "backend")})
}

// nameOf is the {name} of the path, or the form's field when the path has
// "-" (a form whose select or input names it).
func nameOf(r *http.Request, field string) string {
	if n := r.PathValue("name"); n != "-" {
		return n
	}
	return strings.TrimSpace(r.PostFormValue(field))
}

func (c *Console) control(w http.ResponseWriter, r *http.Request, ops map[string]string, req health.ControlRequest) {
	op, ok := ops[r.PathValue("op")]
	if !ok || req.Route+req.Backend == "" {
		httpError(w, r, http.StatusNotFound, "no such action")
		return
	}
	ctx, cancel := c.reqContext(r)
	defer cancel()
	replies, err := c.ask(ctx, op, req)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	res := ActionResult{OK: len(replies) > 0, Replies: replies}
	okN := 0
	var refused []string
	for _, rp := range replies {
		if rp.OK {
			okN++
		} else {
			refused = append(refused, rp.Worker+": "+rp.Error)
			res.OK = false
		}
	}
	res.Message = fmt.Sprintf("%s %s: done on %d worker(s)", op, req.Route+req.Backend, okN)
	if len(refused) > 0 {
		res.Message += "; refused by " + strings.Join(refused, "; ")
	}
	status := http.StatusOK
	if len(refused) > 0 {
		status = http.StatusUnprocessableEntity
	}
	if len(replies) == 0 {
		res.Message = fmt.Sprintf("%s %s: no worker answered within %s", op, req.Route+req.Backend, c.o.AskWait)
		status = http.StatusGatewayTimeout
	}
	if wantsJSON(r) && status != http.StatusOK {
		// A script learns from the status that it was not done
		// everywhere; the body says where and why.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(res)
		return
	}
	c.done(w, r, res, nil)
}

// ask sends a control request to every worker on the admin plane and
// gathers the replies that come within AskWait.
func (c *Console) ask(ctx context.Context, op string, req health.ControlRequest) ([]health.ControlReply, error) {
	nc := c.o.Conn
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	msgs := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", op, err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // only stops the replies
	if err := nc.PublishRequest(health.AdminSubject(c.o.Topology.Prefix)+".all."+op, inbox, body); err != nil {
		return nil, fmt.Errorf("admin %s: %w", op, err)
	}
	wait := time.NewTimer(c.o.AskWait)
	defer wait.Stop()
	var out []health.ControlReply
	for {
		select {
		case m := <-msgs:
			var rp health.ControlReply
			if json.Unmarshal(m.Data, &rp) == nil && rp.Worker != "" {
				out = append(out, rp)
			}
		case <-wait.C:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// actSchedule removes a periodic schedule.
func (c *Console) actSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if r.PathValue("op") != "remove" {
		httpError(w, r, http.StatusNotFound, "no such action")
		return
	}
	ctx, cancel := c.reqContext(r)
	defer cancel()
	if err := c.sched.Remove(ctx, name); err != nil {
		c.fail(w, r, err)
		return
	}
	c.done(w, r, ActionResult{OK: true, Message: "schedule " + name + " removed"}, nil)
}
