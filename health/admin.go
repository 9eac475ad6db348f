package health

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Controller carries out the admin plane's control requests.
type Controller interface {
	PauseRoute(name string) error
	ResumeRoute(name string) error
	TripBreaker(backend string) error
	ResetBreaker(backend string) error
}

// RunningTasks knows the tasks running on a worker and stops them; the
// worker's pipeline implements it. Methods are called concurrently.
type RunningTasks interface {
	// Running reports whether task typ/id calls its backends here now,
	// and since when.
	Running(typ, id string) (since time.Time, ok bool)
	// Cancel stops task typ/id if it runs here (its backend call's
	// context ends and it is dead-lettered as cancelled) and reports
	// whether it did.
	Cancel(typ, id string) bool
}

// TaskRequest is the body of a task.status or task.cancel request.
type TaskRequest struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// TaskReply answers a task request: whether the task runs on Worker (and
// since when) or, for task.cancel, whether this worker stopped it.
type TaskReply struct {
	Worker    string    `json:"worker"`
	Running   bool      `json:"running"`
	Since     time.Time `json:"since,omitzero"`
	Cancelled bool      `json:"cancelled,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// AdminSubject is the first token(s) of the admin plane's subjects of an
// installation whose topology prefix is prefix ("" for none).
func AdminSubject(prefix string) string {
	if prefix == "" {
		return "breakwater"
	}
	return prefix + ".breakwater"
}

// ServiceName is the micro service name every worker registers.
const ServiceName = "breakwater"

// AdminOptions configure the admin service.
type AdminOptions struct {
	Conn    *nats.Conn
	Monitor *Monitor
	Control Controller
	// Tasks, when set, answers task.status and task.cancel; without it
	// the worker does not register them.
	Tasks    RunningTasks
	WorkerID string
	Version  string
	// Subject is the first token of the control subjects; default
	// "breakwater" (with a topology prefix, "<prefix>.breakwater").
	Subject string
	// Metadata is added to the service's metadata in $SRV.INFO (nats
	// micro info), beside "worker".
	Metadata map[string]string
}

// Status is the body of the status endpoint and the data of every
// endpoint in $SRV.STATS: the worker's backends' health.
type Status struct {
	Worker   string         `json:"worker"`
	Backends []BackendEvent `json:"backends"`
}

// ControlRequest is the body of a control request.
type ControlRequest struct {
	Route   string `json:"route,omitempty"`
	Backend string `json:"backend,omitempty"`
}

// ControlReply answers a control request.
type ControlReply struct {
	Worker string `json:"worker"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

// StartAdmin makes the worker a NATS micro service named "breakwater"
// ($SRV.PING/INFO/STATS; nats micro ls/info/stats show it), with these
// endpoints, each answered by this worker on <subject>.<worker-id>.<op>
// and by every worker at once on <subject>.all.<op> (no queue group: use
// a request that waits for several replies, or publish):
//
//	status        {"worker","backends":[health of each backend]}
//	route.pause   {"route":"NAME"}     hold the route's tasks
//	route.resume  {"route":"NAME"}
//	breaker.trip  {"backend":"NAME"}   open its breaker now
//	breaker.reset {"backend":"NAME"}   close it now
//	task.status   {"type","id"}        {"worker","running","since"}
//	task.cancel   {"type","id"}        {"worker","running","cancelled"}
//
// The task endpoints (registered when Tasks is set) answer on every worker
// whether the task runs there; ask <subject>.all and read the replies, the
// one with running true is the worker that has it. task.cancel stops it
// there (Tasks.Cancel), so a broadcast cancels it wherever it runs.
//
// Control replies are {"worker","ok","error"}; a failed one also carries
// the micro error headers Nats-Service-Error-Code (400: the request is
// not JSON or lacks its field; 422: the Controller refused, e.g. an
// unknown route) and Nats-Service-Error. Controller methods are called on
// the service's goroutines, concurrently. Stop the service with Stop.
// Errors wrap ErrInvalidOption when a required option is missing.
func StartAdmin(o AdminOptions) (micro.Service, error) {
	if o.Conn == nil || o.Monitor == nil || o.Control == nil || o.WorkerID == "" {
		return nil, fmt.Errorf("%w: admin needs Conn, Monitor, Control and WorkerID", ErrInvalidOption)
	}
	if o.Subject == "" {
		o.Subject = "breakwater"
	}
	version := o.Version
	if version == "" || version == "dev" {
		version = "0.0.0-dev" // micro wants semantic versions
	}
	status := func() Status { return Status{Worker: o.WorkerID, Backends: o.Monitor.Snapshot()} }
	svc, err := micro.AddService(o.Conn, micro.Config{
		Name:         ServiceName,
		Version:      version,
		Description:  "Breakwater task worker " + o.WorkerID,
		Metadata:     metadata(o),
		StatsHandler: func(*micro.Endpoint) any { return status() },
	})
	if err != nil {
		return nil, fmt.Errorf("admin service: %w", err)
	}
	// control answers a control request; field names the request's
	// required field ("route" or "backend").
	control := func(field string, op func(ControlRequest) error) micro.HandlerFunc {
		return func(r micro.Request) {
			var req ControlRequest
			code, msg := "", ""
			if err := json.Unmarshal(r.Data(), &req); err != nil {
				code, msg = "400", "bad request: "+err.Error()
			} else if (field == "route" && req.Route == "") || (field == "backend" && req.Backend == "") {
				code, msg = "400", "bad request: "+field+" is required"
			} else if err := op(req); err != nil {
				code, msg = "422", err.Error()
			}
			if code == "" {
				_ = r.RespondJSON(ControlReply{Worker: o.WorkerID, OK: true})
				return
			}
			// An error reply keeps the JSON body, and micro counts it in
			// the endpoint's num_errors.
			body, _ := json.Marshal(ControlReply{Worker: o.WorkerID, Error: msg})
			_ = r.Error(code, msg, body)
		}
	}
	endpoints := []struct {
		name    string
		handler micro.Handler
	}{
		{"status", micro.HandlerFunc(func(r micro.Request) { _ = r.RespondJSON(status()) })},
		{"route.pause", control("route", func(c ControlRequest) error { return o.Control.PauseRoute(c.Route) })},
		{"route.resume", control("route", func(c ControlRequest) error { return o.Control.ResumeRoute(c.Route) })},
		{"breaker.trip", control("backend", func(c ControlRequest) error { return o.Control.TripBreaker(c.Backend) })},
		{"breaker.reset", control("backend", func(c ControlRequest) error { return o.Control.ResetBreaker(c.Backend) })},
	}
	if o.Tasks != nil {
		endpoints = append(endpoints, []struct {
			name    string
			handler micro.Handler
		}{
			{"task.status", taskHandler(o.WorkerID, func(req TaskRequest) TaskReply {
				since, ok := o.Tasks.Running(req.Type, req.ID)
				return TaskReply{Worker: o.WorkerID, Running: ok, Since: since}
			})},
			{"task.cancel", taskHandler(o.WorkerID, func(req TaskRequest) TaskReply {
				since, ok := o.Tasks.Running(req.Type, req.ID)
				stopped := o.Tasks.Cancel(req.Type, req.ID)
				return TaskReply{Worker: o.WorkerID, Running: ok || stopped, Since: since, Cancelled: stopped}
			})},
		}...)
	}
	one := svc.AddGroup(o.Subject+"."+Token(o.WorkerID), micro.WithGroupQueueGroupDisabled())
	all := svc.AddGroup(o.Subject+".all", micro.WithGroupQueueGroupDisabled())
	for _, e := range endpoints {
		// Endpoint names allow no dots; the subjects have them.
		name := strings.ReplaceAll(e.name, ".", "-")
		if err := one.AddEndpoint(name, e.handler, micro.WithEndpointSubject(e.name)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("admin endpoint %s: %w", e.name, err)
		}
		if err := all.AddEndpoint("all-"+name, e.handler, micro.WithEndpointSubject(e.name)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("admin endpoint %s: %w", e.name, err)
		}
	}
	return svc, nil
}

// taskHandler decodes a task request, refusing one without type or id
// (400), and answers it with op's reply.
func taskHandler(worker string, op func(TaskRequest) TaskReply) micro.HandlerFunc {
	return func(r micro.Request) {
		var req TaskRequest
		msg := ""
		if err := json.Unmarshal(r.Data(), &req); err != nil {
			msg = "bad request: " + err.Error()
		} else if req.Type == "" || req.ID == "" {
			msg = "bad request: type and id are required"
		}
		if msg != "" {
			body, _ := json.Marshal(TaskReply{Worker: worker, Error: msg})
			_ = r.Error("400", msg, body)
			return
		}
		_ = r.RespondJSON(op(req))
	}
}

// metadata is the service's $SRV.INFO metadata: o.Metadata and the worker.
func metadata(o AdminOptions) map[string]string {
	md := map[string]string{}
	for k, v := range o.Metadata {
		md[k] = v
	}
	md["worker"] = o.WorkerID
	return md
}
