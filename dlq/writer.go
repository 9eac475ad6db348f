package dlq

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/redact"
	"github.com/breakwater/breakwater/task"
)

// MaxErrorLen bounds the Dlq-Error header.
const MaxErrorLen = 1024

// HeaderOriginalMsgID keeps the task's own Nats-Msg-Id on its DLQ copy:
// the copy's Nats-Msg-Id is its dedupe id (DedupeID), and no other Nats-*
// header of the task is copied (they are instructions to the server).
const HeaderOriginalMsgID = "Dlq-Original-Msg-Id"

// ErrTooLarge means a DLQ copy does not fit the server's max_payload even
// without its history and payload (its headers alone are too large), or
// does not fit without its payload and the Writer has no Payloads.
var ErrTooLarge = errors.New("DLQ copy does not fit the server's max_payload")

// ErrInvalidOption is wrapped by the errors of EnsureWriter and
// NewCrashLoopWatcher when their options are missing or impossible.
var ErrInvalidOption = errors.New("invalid DLQ option")

// Publisher is the part of jetstream.JetStream the Writer needs.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Writer stores dead-lettered tasks in the DLQ stream. It is safe for
// concurrent use.
type Writer struct {
	js         Publisher
	topo       bus.Topology
	worker     string
	now        func() time.Time
	deny       *redact.Headers
	maxPayload int64
	payloads   *Payloads
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	Topology bus.Topology
	// Worker identifies this worker in Dlq-Worker.
	Worker string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// RedactHeaders are header names or '*' patterns (config
	// dlq.redact_headers) kept out of DLQ copies and error replies, and
	// whose values are hidden in error texts, besides
	// redact.DefaultHeaders. Matched without regard to case.
	RedactHeaders []string
	// MaxPayload is the largest message the server takes: the worker's
	// nc.MaxPayload(). A copy larger than that is made to fit: its
	// Dlq-History is trimmed, then its payload is moved to Payloads. 0
	// means unknown: a copy the client then refuses as too large
	// (nats.ErrMaxPayload) is sent again without history and payload.
	MaxPayload int64
	// Payloads keeps the payloads that do not fit in their entry.
	// EnsureWriter sets it. Without it such a copy fails with ErrTooLarge
	// (and the task stays in TASKS).
	Payloads *Payloads
}

// EnsureWriter returns a Writer publishing through js, with the payloads
// bucket created or opened (unless o.Payloads is set). Bad RedactHeaders
// are an error wrapping ErrInvalidOption and redact.ErrInvalidPattern.
// This is how a worker makes its Writer.
func EnsureWriter(ctx context.Context, js jetstream.JetStream, o WriterOptions) (*Writer, error) {
	deny, err := redact.NewHeaders(o.RedactHeaders...)
	if err != nil {
		return nil, fmt.Errorf("%w: redact headers: %w", ErrInvalidOption, err)
	}
	if o.Payloads == nil {
		if o.Payloads, err = EnsurePayloads(ctx, js, o.Topology); err != nil {
			return nil, err
		}
	}
	return newWriter(js, o, deny), nil
}

// NewWriter returns a Writer publishing through js, with no I/O. It panics
// on RedactHeaders that redact.NewHeaders refuses (check them with it
// first, or use EnsureWriter). Without o.Payloads, a copy that fits only
// without its payload fails with ErrTooLarge.
func NewWriter(js Publisher, o WriterOptions) *Writer {
	deny, err := redact.NewHeaders(o.RedactHeaders...)
	if err != nil {
		panic(fmt.Sprintf("dlq.NewWriter: %v", err))
	}
	return newWriter(js, o, deny)
}

func newWriter(js Publisher, o WriterOptions, deny *redact.Headers) *Writer {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Writer{js: js, topo: o.Topology, worker: o.Worker, now: o.Now, deny: deny,
		maxPayload: o.MaxPayload, payloads: o.Payloads}
}

// Entry is one task to dead-letter.
type Entry struct {
	ID       string // the task id (set as Task-Id on the copy)
	Type     string
	Subject  string      // original subject
	Seq      uint64      // original stream sequence in TASKS; 0: not from TASKS (no dedupe)
	Header   nats.Header // original headers, copied, never modified
	Payload  []byte
	Reason   Reason
	Err      error    // last error; may be nil
	Attempts int      // backend calls made
	Backends []string // backends tried, in order, without repeats
	History  []Record // every call on every delivery, oldest first
}

// Redact is the Writer's redaction of an error text (redact.Text with the
// configured headers too): what Dlq-Error, the history and logs carry.
func (w *Writer) Redact(s string) string { return w.deny.Text(s) }

// Headers is the Writer's deny-list, to share with the History
// (WithHistoryRedaction) and with logs.
func (w *Writer) Headers() *redact.Headers { return w.deny }

// Denied reports whether a header is on the Writer's deny-list.
func (w *Writer) Denied(name string) bool { return w.deny.Denied(name) }

// Header returns the headers the DLQ copy carries: the original headers
// but the denied ones (the deny-list: redact.DefaultHeaders and
// RedactHeaders), the Dlq-* ones and the Nats-* ones; Task-Id set to the
// task's id so that a replay keeps it; the task's Nats-Msg-Id as
// Dlq-Original-Msg-Id; and the Writer's own Dlq-* headers, the history
// bounded by MaxHistoryLen with its error texts redacted. Error replies to
// Task-Reply-To carry the same headers.
//
// Nothing a publisher wrote in a Dlq-* header survives: the reason, error,
// history and the rest are the Writer's. Dlq-Replays is the one count taken
// from the task, and only as ReplayCount allows.
func (w *Writer) Header(e *Entry) nats.Header {
	h, recs := w.header(e)
	setHistory(h, recs, MaxHistoryLen)
	return h
}

// header is Header without the history, which it returns redacted.
func (w *Writer) header(e *Entry) (nats.Header, []Record) {
	h := make(nats.Header, len(e.Header)+12)
	for k, v := range e.Header {
		if w.deny.Denied(k) || hasPrefixFold(k, "Dlq-") || hasPrefixFold(k, "Nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	if id := e.Header.Get(task.HeaderMsgID); id != "" {
		h.Set(HeaderOriginalMsgID, id)
	}
	errText := ""
	if e.Err != nil {
		errText = w.deny.Text(e.Err.Error())
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
	h.Set(task.HeaderDLQReplays, strconv.Itoa(ReplayCount(e.ID, e.Header)))
	var recs []Record
	if len(e.History) > 0 {
		recs = make([]Record, len(e.History))
		for i, r := range e.History {
			r.Error = truncate(w.deny.Text(r.Error), maxRecordError)
			recs[i] = r
		}
	}
	return h, recs
}

// setHistory sets Dlq-History to the most recent of recs that fit maxLen
// bytes and Dlq-History-Dropped to the count of those left out (absent
// when none were).
func setHistory(h nats.Header, recs []Record, maxLen int) {
	h.Del(HeaderHistory)
	h.Del(HeaderHistoryDropped)
	if len(recs) == 0 {
		return
	}
	v, dropped := encodeHistory(recs, maxLen)
	if v != "" {
		h.Set(HeaderHistory, v)
	}
	if dropped > 0 {
		h.Set(HeaderHistoryDropped, strconv.Itoa(dropped))
	}
}

// ReplayCount is the Dlq-Replays of a task with id id and headers h: the
// count a replay wrote (publisher dlq replay publishes with Nats-Msg-Id
// <id>-r<N> and Dlq-Replays: N), accepted only when the two agree, else 0.
// It is a counter for operators, not a proof: a publisher can write both
// headers consistently.
func ReplayCount(id string, h nats.Header) int {
	n, err := strconv.Atoi(h.Get(task.HeaderDLQReplays))
	if err != nil || n < 1 || id == "" {
		return 0
	}
	if h.Get(task.HeaderMsgID) != id+"-r"+strconv.Itoa(n) {
		return 0
	}
	return n
}

// DedupeID is the Nats-Msg-Id of the DLQ copy of the task at seq in the
// TASKS stream of t: dlq-<TASKS stream>-<seq>. Keyed on the stream
// sequence, never on the task's own Nats-Msg-Id: two tasks that reuse an
// id are two messages and both land in the DLQ, while one task
// dead-lettered twice (a worker died between storing the copy and removing
// the task) is stored once within the DLQ's duplicate window. It is ""
// for seq 0 (not from TASKS: no dedupe).
func DedupeID(t bus.Topology, seq uint64) string {
	if seq == 0 {
		return ""
	}
	return "dlq-" + t.TasksStream() + "-" + strconv.FormatUint(seq, 10)
}

// Stored says how a DLQ copy was stored.
type Stored struct {
	// Seq is the entry's sequence in the DLQ stream.
	Seq uint64
	// Duplicate: the copy of this very task (same TASKS sequence) was
	// stored before; nothing new was written. It is a success.
	Duplicate bool
	// PayloadObject names the object holding the payload when it did not
	// fit in the entry ("" when the entry holds it).
	PayloadObject string
	// HistoryDropped counts the attempt records left out of Dlq-History.
	HistoryDropped int
}

// Write stores e in the DLQ and returns once the server acknowledged it;
// see Store.
func (w *Writer) Write(ctx context.Context, e *Entry) error {
	_, err := w.Store(ctx, e)
	return err
}

// Store stores e in the DLQ and returns once the server acknowledged it.
// The copy is deduplicated by DedupeID; a duplicate is a success
// (Stored.Duplicate). A copy larger than MaxPayload is made to fit: the
// oldest history records are dropped first (Dlq-History-Dropped counts
// them); if it still does not fit, the payload goes to Payloads under the
// dedupe id and the entry, with an empty body, names it
// (HeaderPayloadObject, HeaderPayloadSize; read it back with
// Payloads.Payload or LoadPayload), with as much history as then fits.
func (w *Writer) Store(ctx context.Context, e *Entry) (Stored, error) {
	if e.Type == "" {
		return Stored{}, errors.New("dead-letter: entry has no task type")
	}
	h, recs := w.header(e)
	id := DedupeID(w.topo, e.Seq)
	var opts []jetstream.PublishOpt
	if id != "" {
		// Set here as well as by WithMsgID, so that the size check counts it.
		h.Set(task.HeaderMsgID, id)
		opts = append(opts, jetstream.WithMsgID(id))
	}
	setHistory(h, recs, MaxHistoryLen)
	msg := &nats.Msg{Subject: w.topo.DLQSubject(e.Type), Header: h, Data: e.Payload}
	if w.maxPayload > 0 {
		if err := w.fit(ctx, msg, recs, id, w.maxPayload); err != nil {
			return Stored{}, err
		}
	}
	ack, err := w.js.PublishMsg(ctx, msg, opts...)
	if errors.Is(err, nats.ErrMaxPayload) {
		// The limit was unknown, or the server's is lower than we were
		// told (a reconnect to another server): make it as small as it
		// can be and try once more.
		if err = w.fit(ctx, msg, recs, id, 0); err != nil {
			return Stored{}, err
		}
		ack, err = w.js.PublishMsg(ctx, msg, opts...)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("dead-letter task to %s: %w", msg.Subject, err)
	}
	s := Stored{Seq: ack.Sequence, Duplicate: ack.Duplicate, PayloadObject: PayloadObject(msg.Header)}
	s.HistoryDropped, _ = strconv.Atoi(msg.Header.Get(HeaderHistoryDropped))
	return s, nil
}

// fit makes msg at most limit bytes on the wire (headers and body, as the
// server counts max_payload); limit 0 means as small as it can be.
func (w *Writer) fit(ctx context.Context, msg *nats.Msg, recs []Record, id string, limit int64) error {
	fits := func() bool { return limit > 0 && wireSize(msg) <= limit }
	if fits() {
		return nil
	}
	w.trimHistory(msg, recs, limit)
	if fits() {
		return nil
	}
	if len(msg.Data) > 0 {
		if w.payloads == nil {
			return fmt.Errorf("%w: %d bytes, limit %d, and no payloads bucket", ErrTooLarge, wireSize(msg), limit)
		}
		name := id
		if name == "" {
			name = "dlq-" + w.topo.TasksStream() + "-" + nuid.Next()
		}
		if err := w.payloads.put(ctx, name, msg.Data, chunkSize(limit)); err != nil {
			return err
		}
		msg.Header.Set(HeaderPayloadObject, name)
		msg.Header.Set(HeaderPayloadSize, strconv.Itoa(len(msg.Data)))
		msg.Data = nil
		// The room the payload left is the history's again.
		setHistory(msg.Header, recs, MaxHistoryLen)
		w.trimHistory(msg, recs, limit)
	}
	if limit > 0 && !fits() {
		return fmt.Errorf("%w: its headers alone are %d bytes, limit %d", ErrTooLarge, wireSize(msg), limit)
	}
	return nil
}

// trimHistory drops the oldest records of msg's Dlq-History until msg fits
// limit (all of them for limit 0).
func (w *Writer) trimHistory(msg *nats.Msg, recs []Record, limit int64) {
	if len(recs) == 0 || limit > 0 && wireSize(msg) <= limit {
		return
	}
	if limit > 0 {
		over := wireSize(msg) - limit
		// Room for the longer Dlq-History-Dropped header a trim may add.
		room := int64(len(msg.Header.Get(HeaderHistory))) - over - int64(len(HeaderHistoryDropped)+16)
		if room >= 2 {
			setHistory(msg.Header, recs, int(room))
			if wireSize(msg) <= limit {
				return
			}
		}
	}
	msg.Header.Del(HeaderHistory)
	msg.Header.Set(HeaderHistoryDropped, strconv.Itoa(len(recs)))
}

// wireSize is the size the server checks against max_payload: the encoded
// headers (as nats.go writes them) plus the body.
func wireSize(m *nats.Msg) int64 {
	n := len(m.Data)
	if len(m.Header) > 0 {
		n += len("NATS/1.0\r\n") + len("\r\n")
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(textproto.TrimString(v)) + len(": \r\n")
			}
		}
	}
	return int64(n)
}

// chunkSize is the object store chunk for a server limit: the default 128
// KiB when it fits, else the limit less room for the chunk's own framing.
func chunkSize(limit int64) int {
	const def, margin = 128 << 10, 1 << 10
	switch {
	case limit <= 0:
		return 32 << 10 // the limit is unknown, and was just exceeded
	case limit >= def+margin:
		return def
	case limit > 2*margin:
		return int(limit) - margin
	default:
		return int(limit) / 2
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
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
