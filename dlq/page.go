package dlq

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxPageScan bounds the entries one Page call reads looking for matches
// of a filter the server cannot apply (reason, backend): a page of a rare
// match over a large DLQ then ends early, with a cursor to go on from,
// instead of reading the whole stream in one request.
const MaxPageScan = 5000

// scanBatch is how many entries' headers one fetch of a filtered Page
// asks for (a few hundred bytes each).
const scanBatch = 2048

// Page is one page of DLQ entries.
type Page struct {
	// Items are the entries, in stream order, headers only (Data is
	// nil: Get reads an entry whole).
	Items []*Item
	// Next is the cursor of the following page (pass it as after), 0
	// when no entry is stored after this page.
	Next uint64
	// Scanned is how many entries were read to fill the page.
	Scanned int
}

// Page returns up to limit entries matching f stored after the sequence
// after (0: from the start), reading only from there on: a page costs the
// same on a DLQ of a hundred entries as on one of millions, and holds at
// most one fetch of headers in memory. f.Types and f.Since are applied by
// the server; reasons, backends and f.Until are matched here, reading at
// most MaxPageScan entries (then the page is short and Next says where to
// go on). f.Limit and f.Seqs are ignored. limit <= 0 means 50.
func (a *Admin) Page(ctx context.Context, f Filter, after uint64, limit int) (Page, error) {
	if limit <= 0 {
		limit = 50
	}
	info, err := a.dlq.Info(ctx)
	if err != nil {
		return Page{}, fmt.Errorf("stream %s: %w", a.topo.DLQStream(), err)
	}
	if info.State.Msgs == 0 || info.State.LastSeq <= after ||
		(!f.Since.IsZero() && f.Since.After(info.State.LastTime)) {
		return Page{}, nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   max(after+1, info.State.FirstSeq),
		HeadersOnly:   true,
	}
	for _, typ := range f.Types {
		cfg.FilterSubjects = append(cfg.FilterSubjects, a.topo.DLQSubject(typ))
	}
	if !f.Since.IsZero() && after == 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, 0, &f.Since
	}
	cons, err := a.js.OrderedConsumer(ctx, a.topo.DLQStream(), cfg)
	if err != nil {
		return Page{}, fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
	}
	var p Page
	last := info.State.LastSeq
	// Without a filter to apply here every entry read is one of the
	// page: ask for a little more than the page needs (the next entry
	// tells whether there is a next page). With one, large fetches of
	// headers: a round trip per 256 entries is what makes a rare match
	// slow to find.
	batch := scanPage
	if len(f.Reasons) > 0 || len(f.Backends) > 0 {
		batch = scanBatch
	}
	for p.Scanned < MaxPageScan {
		want := min(max(limit+1-len(p.Items), 64), batch, MaxPageScan-p.Scanned)
		if batch == scanBatch {
			want = min(batch, MaxPageScan-p.Scanned)
		}
		batch, err := cons.FetchNoWait(want)
		if err != nil {
			return Page{}, fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			p.Scanned++
			meta, err := m.Metadata()
			if err != nil {
				return Page{}, fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
			}
			i := &Item{Seq: meta.Sequence.Stream, Subject: m.Subject(), Time: meta.Timestamp, Header: m.Headers()}
			if !f.Until.IsZero() && i.Time.After(f.Until) {
				return p, nil // so is everything after it
			}
			if f.matches(i, a.topo) {
				if len(p.Items) == limit {
					return p, nil // i starts the next page: Next is set
				}
				p.Items = append(p.Items, i)
			}
			p.Next = i.Seq
			if meta.NumPending == 0 || i.Seq >= last {
				p.Next = 0
				return p, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return Page{}, fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
		}
		if got == 0 {
			p.Next = 0
			return p, nil
		}
	}
	return p, nil
}
