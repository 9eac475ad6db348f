package dlq_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/breakwater/breakwater/dlq"
)

// pageIDs walks every page of f, limit entries each, and returns the ids
// in order and the number of pages.
func pageIDs(t *testing.T, a *dlq.Admin, f dlq.Filter, limit int) ([]string, int) {
	t.Helper()
	var out []string
	after, pages := uint64(0), 0
	for {
		p, err := a.Page(context.Background(), f, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(p.Items) > limit {
			t.Fatalf("page of %d items, limit %d", len(p.Items), limit)
		}
		for _, i := range p.Items {
			if i.Data != nil {
				t.Errorf("page item %d carries its payload, want headers only", i.Seq)
			}
			out = append(out, i.ID())
		}
		if p.Next == 0 {
			return out, pages
		}
		if p.Next <= after {
			t.Fatalf("cursor went from %d to %d", after, p.Next)
		}
		after = p.Next
		if pages > 20 {
			t.Fatal("too many pages")
		}
	}
}

func TestPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := fill(t, e)
	for _, tt := range []struct {
		name      string
		give      dlq.Filter
		limit     int
		want      []string
		wantPages int
	}{
		{"all in one page", dlq.Filter{}, 50, []string{"a1", "a2", "b1", "b2", "c1"}, 1},
		{"all by two", dlq.Filter{}, 2, []string{"a1", "a2", "b1", "b2", "c1"}, 3},
		{"exactly full pages", dlq.Filter{}, 5, []string{"a1", "a2", "b1", "b2", "c1"}, 1},
		{"type", dlq.Filter{Types: []string{"beta"}}, 1, []string{"b1", "b2"}, 2},
		{"types", dlq.Filter{Types: []string{"alpha", "code.gen"}}, 2, []string{"a1", "a2", "c1"}, 2},
		{"reason", dlq.Filter{Reasons: []dlq.Reason{dlq.Exhausted}}, 1, []string{"a1", "b1"}, 2},
		{"backend", dlq.Filter{Backends: []string{"y"}}, 10, []string{"a1", "a2"}, 1},
		{"nothing matches", dlq.Filter{Types: []string{"none"}}, 10, nil, 1},
		{"since the future", dlq.Filter{Since: time.Now().Add(time.Hour)}, 10, nil, 1},
		{"until the past", dlq.Filter{Until: time.Now().Add(-time.Hour)}, 10, nil, 1},
		{"since an hour ago", dlq.Filter{Since: time.Now().Add(-time.Hour)}, 3, []string{"a1", "a2", "b1", "b2", "c1"}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, pages := pageIDs(t, a, tt.give, tt.limit)
			if !slices.Equal(got, tt.want) || pages != tt.wantPages {
				t.Errorf("got %v in %d page(s), want %v in %d", got, pages, tt.want, tt.wantPages)
			}
		})
	}
	// A cursor past the end: an empty last page, at once.
	start := time.Now()
	p, err := a.Page(context.Background(), dlq.Filter{}, 1<<40, 10)
	if err != nil || len(p.Items) != 0 || p.Next != 0 {
		t.Errorf("page after the end: %+v %v, want an empty last page", p, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("page after the end took %s, want no wait", d)
	}
}
