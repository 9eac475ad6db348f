package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
)

// MaxErrorLen bounds the Dlq-Error header.
const MaxErrorLen = 1024

// Publisher is the part of jetstream.JetStream the Writer needs.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Writer stores dead-lettered tasks in the DLQ stream. It is safe for
// concurrent use.
type Writer struct {
	js     Publisher
	topo   bus.Topology
	worker string
	now    func() time.Time
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	Topology bus.Topology
	// Worker identifies this worker in Dlq-Worker.
	Worker string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// NewWriter returns a Writer publishing through js.
func NewWriter(js Publisher, o WriterOptions) *Writer {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Writer{js: js, topo: o.Topology, worker: o.Worker, now: o.Now}
}

// Entry is one task to dead-letter.
type Entry struct {
	ID       string // the task id (set as Task-Id on the copy)
	Type     string
	Subject  string      // original subject
	Seq      uint64      // original stream sequence in TASKS
	Header   nats.Header // original headers, copied, never modified
	Payload  []byte
	Reason   Reason
	Err      error    // last error; may be nil
	Attempts int      // backend calls made
	Backends []string // backends tried, in order, without repeats
	History  []Record // every call on every delivery, oldest first
}

// Header returns the headers the DLQ copy carries: every original header
// (except an Authorization a publisher may have set), Task-Id set to the
// task's id so that a replay keeps it, plus the Dlq-* headers. Error replies
// to Task-Reply-To carry the same headers.
func (w *Writer) Header(e *Entry) nats.Header {
	h := make(nats.Header, len(e.Header)+10)
	for k, v := range e.Header {
		if strings.EqualFold(k, "Authorization") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	replays := 0
	if v := e.Header.Get(task.HeaderDLQReplays); v != "" {
		replays, _ = strconv.Atoi(v)
	}
	errText := ""
	if e.Err != nil {
		errText = Redact(e.Err.Error())
	}
	if e.ID != "" && h.Get(task.HeaderID) == "" {
		h.Set(task.HeaderID, e.ID)
	}
	h.Set(task.HeaderDLQReason, string(e.Reason))
	h.Set(task.HeaderDLQError, truncate(errText, MaxErrorLen))
	h.Set(task.HeaderDLQAttempts, strconv.Itoa(e.Attempts))
	h.Set(task.HeaderDLQBackends, strings.Join(e.Backends, ","))
	h.Set(task.HeaderDLQOriginalSubject, e.Subject)
	h.Set(task.HeaderDLQOriginalSeq, strconv.FormatUint(e.Seq, 10))
	h.Set(task.HeaderDLQFailedAt, w.now().UTC().Format(time.RFC3339))
	h.Set(task.HeaderDLQWorker, w.worker)
	h.Set(task.HeaderDLQReplays, strconv.Itoa(replays))
	if len(e.History) > 0 {
		v, dropped := encodeHistory(e.History)
		h.Set(HeaderHistory, v)
		if dropped > 0 {
			h.Set(HeaderHistoryDropped, strconv.Itoa(dropped))
		}
	}
	return h
}

// Write stores e in the DLQ and returns once the server acknowledged it.
// The copy is deduplicated by the task's own Nats-Msg-Id (else its stream
// sequence), so a worker that dies between storing the copy and removing the
// task stores it only once when the task is redelivered within the DLQ's
// duplicate window.
func (w *Writer) Write(ctx context.Context, e *Entry) error {
	if e.Type == "" {
		return errors.New("dead-letter: entry has no task type")
	}
	msg := &nats.Msg{
		Subject: w.topo.DLQSubject(e.Type),
		Header:  w.Header(e),
		Data:    e.Payload,
	}
	id := msg.Header.Get(task.HeaderMsgID)
	if id == "" {
		id = "dlq-" + w.topo.TasksStream() + "-" + strconv.FormatUint(e.Seq, 10)
	}
	if _, err := w.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("dead-letter task to %s: %w", msg.Subject, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so the header stays valid UTF-8.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
