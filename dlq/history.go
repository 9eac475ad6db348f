package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/redact"
	"github.com/breakwater/breakwater/resilience"
)

// HeaderHistory carries a DLQ entry's attempt history: a JSON array of
// Record, the most recent last, bounded by MaxHistoryLen.
const HeaderHistory = "Dlq-History"

// HeaderHistoryDropped counts the oldest records left out of Dlq-History
// to keep it within MaxHistoryLen (absent when none were).
const HeaderHistoryDropped = "Dlq-History-Dropped"

// MaxHistoryLen bounds the Dlq-History header in bytes.
const MaxHistoryLen = 8 * 1024

// Class is the class of one backend call's outcome (ClassOf): the class
// of a Record in Dlq-History, a call span's outcome and the outcome label
// of the backend call metrics. Wire format: the values never change.
type Class string

// The classes ClassOf names.
const (
	ClassOK        Class = "ok"
	ClassTransient Class = "transient"
	ClassPermanent Class = "permanent"
	ClassInvalid   Class = "invalid"
)

// Classes lists every class ClassOf returns.
func Classes() []Class {
	return []Class{ClassOK, ClassTransient, ClassPermanent, ClassInvalid}
}

// Record is one backend call of a task, on any delivery, by any worker.
type Record struct {
	Delivery int       `json:"delivery"`
	Backend  string    `json:"backend"`
	Class    Class     `json:"class"`
	Status   int       `json:"status,omitempty"`
	Duration string    `json:"duration"` // Go duration
	At       time.Time `json:"at"`
	Worker   string    `json:"worker,omitempty"`
	Error    string    `json:"error,omitempty"` // redacted, at most 256 bytes
}

// maxRecordError bounds one record's error text.
const maxRecordError = 256

// HistoryBucket is the name of the key-value bucket keeping the attempts
// of tasks between their deliveries.
func HistoryBucket(t bus.Topology) string {
	if t.Prefix == "" {
		return "DLQ_HISTORY"
	}
	return t.Prefix + "_DLQ_HISTORY"
}

// History keeps the attempts of a task between deliveries, so that the
// worker dead-lettering it, whichever it is, can tell the whole story. It
// is written only on the failure path. Entries expire after a day: a task
// is redelivered within minutes or not at all.
type History struct {
	kv   jetstream.KeyValue
	deny *redact.Headers
}

// HistoryOption configures a History.
type HistoryOption func(*History)

// WithHistoryRedaction redacts the error text of every record appended
// with deny (the Writer's list, Writer.Headers) besides the defaults that
// NewRecord applies, so that configured secret headers never reach the
// bucket either.
func WithHistoryRedaction(deny *redact.Headers) HistoryOption {
	return func(h *History) { h.deny = deny }
}

// HistoryTTL is how long a task's attempts are kept after the last one.
const HistoryTTL = 24 * time.Hour

// EnsureHistory creates or opens the history bucket (file storage).
func EnsureHistory(ctx context.Context, js jetstream.JetStream, t bus.Topology, opts ...HistoryOption) (*History, error) {
	cfg := jetstream.KeyValueConfig{
		Bucket:      HistoryBucket(t),
		Description: "Breakwater: backend attempts of tasks between deliveries, for the DLQ",
		TTL:         HistoryTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		History:     1,
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("history bucket %s: %w", cfg.Bucket, err)
	}
	h := &History{kv: kv}
	for _, o := range opts {
		o(h)
	}
	return h, nil
}

// historyKey names a task message by its stream sequence in TASKS: every
// delivery of one message shares it, and a replayed task (a new message)
// starts afresh.
func historyKey(seq uint64) string { return strconv.FormatUint(seq, 10) }

// Append adds records to the history of the task at seq. Concurrent
// appends (two workers, a redelivery racing a slow one) are serialised by
// the bucket's revisions.
func (h *History) Append(ctx context.Context, seq uint64, recs []Record) error {
	if len(recs) == 0 || seq == 0 {
		return nil
	}
	if h.deny != nil {
		recs = slices.Clone(recs)
		for i := range recs {
			recs[i].Error = truncate(h.deny.Text(recs[i].Error), maxRecordError)
		}
	}
	key := historyKey(seq)
	for range 5 {
		var prev []Record
		var rev uint64
		e, err := h.kv.Get(ctx, key)
		switch {
		case err == nil:
			rev = e.Revision()
			if jerr := json.Unmarshal(e.Value(), &prev); jerr != nil {
				prev = nil // a damaged entry is replaced, not fatal
			}
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			return fmt.Errorf("history of %s: %w", key, err)
		}
		b, err := json.Marshal(append(prev, recs...))
		if err != nil {
			return fmt.Errorf("history of %s: %w", key, err)
		}
		if rev == 0 {
			_, err = h.kv.Create(ctx, key, b)
		} else {
			_, err = h.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return fmt.Errorf("history of %s: %w", key, err)
		}
	}
	return fmt.Errorf("history of %s: too many concurrent writers", key)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Load returns the history of the task at seq, oldest first; none is not
// an error.
func (h *History) Load(ctx context.Context, seq uint64) ([]Record, error) {
	e, err := h.kv.Get(ctx, historyKey(seq))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("history of %d: %w", seq, err)
	}
	var recs []Record
	if err := json.Unmarshal(e.Value(), &recs); err != nil {
		return nil, fmt.Errorf("history of %d: %w", seq, err)
	}
	return recs, nil
}

// Delete forgets the history of the task at seq (it left TASKS).
func (h *History) Delete(ctx context.Context, seq uint64) error {
	if err := h.kv.Purge(ctx, historyKey(seq)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("history of %d: %w", seq, err)
	}
	return nil
}

// encodeHistory renders recs for Dlq-History, dropping the oldest until it
// fits maxLen bytes; it returns how many were dropped.
func encodeHistory(recs []Record, maxLen int) (string, int) {
	// The fewest records to drop, found by halving: the encoded length
	// only shrinks as records are dropped.
	lo, hi := 0, len(recs) // answer in [lo, hi]; hi: all dropped
	var best string
	for lo < hi {
		mid := (lo + hi) / 2
		b, err := json.Marshal(recs[mid:])
		if err == nil && len(b) <= maxLen {
			hi, best = mid, string(b)
		} else {
			lo = mid + 1
		}
	}
	if lo == len(recs) {
		return "", len(recs)
	}
	return best, lo // hi moved to lo, so best encodes recs[lo:]
}

// DecodeHistory parses a Dlq-History header value.
func DecodeHistory(v string) ([]Record, error) {
	if v == "" {
		return nil, nil
	}
	var recs []Record
	if err := json.Unmarshal([]byte(v), &recs); err != nil {
		return nil, fmt.Errorf("%s: %w", HeaderHistory, err)
	}
	return recs, nil
}

// NewRecord makes a record of one call; err is redacted (redact.Text; the
// Writer redacts again with the configured headers when it stores the
// history) and shortened.
func NewRecord(delivery int, backend string, class Class, status int, took time.Duration, at time.Time, worker string, err error) Record {
	r := Record{Delivery: delivery, Backend: backend, Class: class, Status: status,
		Duration: took.Round(time.Microsecond).String(), At: at.UTC(), Worker: worker}
	if err != nil {
		r.Error = truncate(redact.Text(err.Error()), maxRecordError)
	}
	return r
}

// Records turns the calls of one delivery (numbered from 1, as the
// server's delivery count) into records made by worker, classing each
// error with ClassOf.
func Records(attempts []resilience.Attempt, delivery int, worker string) []Record {
	out := make([]Record, len(attempts))
	for i, a := range attempts {
		out[i] = NewRecord(delivery, a.Backend, ClassOf(a.Err), handlers.StatusOf(a.Err), a.Duration, a.Start, worker, a.Err)
	}
	return out
}

// ClassOf names the class of a call's error: ok (nil), invalid (the answer
// failed validation), permanent (handlers.IsPermanent) or transient. It is
// the one classifier of calls: the DLQ history, traces and metrics agree.
func ClassOf(err error) Class {
	switch {
	case err == nil:
		return ClassOK
	case errors.Is(err, resilience.ErrInvalidResult):
		return ClassInvalid
	case handlers.IsPermanent(err):
		return ClassPermanent
	default:
		return ClassTransient
	}
}
