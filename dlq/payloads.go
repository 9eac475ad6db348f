package dlq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
)

// Headers of a DLQ entry whose payload did not fit in it.
const (
	// HeaderPayloadObject names the object of the payloads bucket that
	// holds the entry's payload; the entry's own body is then empty.
	HeaderPayloadObject = "Dlq-Payload-Object"
	// HeaderPayloadSize is that payload's length in bytes.
	HeaderPayloadSize = "Dlq-Payload-Size"
)

// ErrPayloadMissing means a DLQ entry names a payload object that cannot be
// found (its bucket or the object is gone).
var ErrPayloadMissing = errors.New("DLQ payload object missing")

// PayloadsBucket is the name of the object store bucket keeping the
// payloads of DLQ entries too large to hold them: DLQ_PAYLOADS, or
// <prefix>_DLQ_PAYLOADS.
func PayloadsBucket(t bus.Topology) string {
	if t.Prefix == "" {
		return "DLQ_PAYLOADS"
	}
	return t.Prefix + "_DLQ_PAYLOADS"
}

// Payloads keeps the payloads that do not fit in their DLQ entry, one
// object per entry named by the entry's dedupe id (DedupeID). Objects live
// as long as their entries (no TTL, like the DLQ): deleting an entry
// should delete its object after it (DeletePayload); an object whose entry
// is gone is only wasted space, never a lost task. Safe for concurrent use.
type Payloads struct {
	os jetstream.ObjectStore
}

// EnsurePayloads creates or opens the payloads bucket (file storage, the
// topology's replicas). Workers call it at start, as they do EnsureHistory.
func EnsurePayloads(ctx context.Context, js jetstream.JetStream, t bus.Topology) (*Payloads, error) {
	cfg := jetstream.ObjectStoreConfig{
		Bucket:      PayloadsBucket(t),
		Description: "Breakwater: payloads of DLQ entries that did not fit in the entry",
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
	}
	store, err := js.CreateOrUpdateObjectStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("payloads bucket %s: %w", cfg.Bucket, err)
	}
	return &Payloads{os: store}, nil
}

// ObjectStoreOpener is the part of jetstream.JetStream that opens a bucket.
type ObjectStoreOpener interface {
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
}

// OpenPayloads opens the payloads bucket without creating it (tools with
// read rights). A missing bucket is an error wrapping ErrPayloadMissing.
func OpenPayloads(ctx context.Context, js ObjectStoreOpener, t bus.Topology) (*Payloads, error) {
	store, err := js.ObjectStore(ctx, PayloadsBucket(t))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: bucket %s", ErrPayloadMissing, PayloadsBucket(t))
	}
	if err != nil {
		return nil, fmt.Errorf("payloads bucket %s: %w", PayloadsBucket(t), err)
	}
	return &Payloads{os: store}, nil
}

// PayloadObject is the name of the object holding the payload of the DLQ
// entry with header h, or "" when the entry holds its payload itself.
func PayloadObject(h nats.Header) string { return h.Get(HeaderPayloadObject) }

// Payload returns the original payload of the DLQ entry with header h and
// body body: body itself, or the object the entry names. A nil *Payloads
// can serve only entries that hold their payload.
func (p *Payloads) Payload(ctx context.Context, h nats.Header, body []byte) ([]byte, error) {
	name := PayloadObject(h)
	if name == "" {
		return body, nil
	}
	if p == nil {
		return nil, fmt.Errorf("%w: %s (no payloads bucket)", ErrPayloadMissing, name)
	}
	b, err := p.os.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrPayloadMissing, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read DLQ payload %s: %w", name, err)
	}
	if want := h.Get(HeaderPayloadSize); want != "" && want != strconv.Itoa(len(b)) {
		return nil, fmt.Errorf("DLQ payload %s is %d bytes, the entry says %s", name, len(b), want)
	}
	return b, nil
}

// Delete removes the object the entry with header h names, if any; one
// already gone is not an error. Delete the entry first, then its object:
// the other order can leave an entry whose payload is lost.
func (p *Payloads) Delete(ctx context.Context, h nats.Header) error {
	name := PayloadObject(h)
	if name == "" || p == nil {
		return nil
	}
	err := p.os.Delete(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete DLQ payload %s: %w", name, err)
	}
	return nil
}

// put stores data as object name in chunks of at most chunk bytes (each
// chunk is one message, so it must fit the server's max_payload). Putting
// the same name again replaces the object: a retried dead-letter stores
// it once.
func (p *Payloads) put(ctx context.Context, name string, data []byte, chunk int) error {
	meta := jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(chunk)}}
	if _, err := p.os.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("store DLQ payload %s: %w", name, err)
	}
	return nil
}

// LoadPayload is Payloads.Payload for tools that hold a JetStream handle:
// it opens the payloads bucket only when the entry names an object.
func LoadPayload(ctx context.Context, js ObjectStoreOpener, t bus.Topology, h nats.Header, body []byte) ([]byte, error) {
	if PayloadObject(h) == "" {
		return body, nil
	}
	p, err := OpenPayloads(ctx, js, t)
	if err != nil {
		return nil, err
	}
	return p.Payload(ctx, h, body)
}

// DeletePayload is Payloads.Delete for tools that hold a JetStream handle:
// call it after the entry is deleted (purge, replay). No object, or no
// bucket, is not an error.
func DeletePayload(ctx context.Context, js ObjectStoreOpener, t bus.Topology, h nats.Header) error {
	if PayloadObject(h) == "" {
		return nil
	}
	p, err := OpenPayloads(ctx, js, t)
	if errors.Is(err, ErrPayloadMissing) {
		return nil
	}
	if err != nil {
		return err
	}
	return p.Delete(ctx, h)
}
