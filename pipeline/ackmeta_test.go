package pipeline

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/internal/testkit"
)

func TestParseAckReply(t *testing.T) {
	ts := time.Date(2026, 12, 2, 10, 0, 0, 5, time.UTC)
	ns := strconv.FormatInt(ts.UnixNano(), 10)
	cases := []struct {
		reply string
		want  ackMeta
		ok    bool
	}{
		{"$JS.ACK.TASKS.workers.3.1042.977." + ns + ".12", ackMeta{1042, 3, ts}, true},
		{"$JS.ACK._.ABCHASH.TASKS.workers.1.7.7." + ns + ".0.rnd", ackMeta{7, 1, ts}, true},
		{"$JS.ACK.hub.ABCHASH.TASKS.workers.2.8.9." + ns + ".0", ackMeta{8, 2, ts}, true},
		{"$JS.ACK.hub.ABCHASH.TASKS.workers.2.8.9." + ns + ".0.rnd.extra", ackMeta{8, 2, ts}, true},
		{"$JS.ACK.TASKS.workers.3.1042.977." + ns, ackMeta{}, false}, // 6 tokens
		{"$JS.ACK.a.b.c.TASKS.workers.3.1042", ackMeta{}, false},     // 8 tokens
		{"$JS.ACK.TASKS.workers.x.1042.977." + ns + ".12", ackMeta{}, false},
		{"$JS.ACK.TASKS.workers.3.-1.977." + ns + ".12", ackMeta{}, false},
		{"_INBOX.abc.def", ackMeta{}, false},
		{"", ackMeta{}, false},
	}
	for _, c := range cases {
		got, ok := parseAckReply(c.reply)
		if ok != c.ok || got.seq != c.want.seq || got.delivered != c.want.delivered || !got.stored.Equal(c.want.stored) {
			t.Errorf("parseAckReply(%q) = %+v, %v; want %+v, %v", c.reply, got, ok, c.want, c.ok)
		}
	}
}

// TestParseAckReplyAgreesWithLibrary reads real deliveries (first and
// redelivered) and compares the parse with jetstream.Msg.Metadata.
func TestParseAckReplyAgreesWithLibrary(t *testing.T) {
	_, js := testkit.StartServer(t).JetStream(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "s."+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for round := 1; round <= 2; round++ {
		b, err := c.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			seen++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			got, ok := parseAckReply(m.Reply())
			if !ok || got.seq != md.Sequence.Stream || got.delivered != int(md.NumDelivered) || !got.stored.Equal(md.Timestamp) {
				t.Errorf("%s: parsed %+v, %v; library %+v", m.Reply(), got, ok, md)
			}
			if got.delivered != round {
				t.Errorf("%s: delivery %d, want %d", m.Reply(), got.delivered, round)
			}
			if round == 1 {
				_ = m.Nak()
			} else {
				_ = m.Ack()
			}
		}
	}
	if seen != 6 {
		t.Fatalf("saw %d deliveries, want 6", seen)
	}
}

// FuzzParseAckReply: any subject is either refused or parsed to the
// numbers in its positions (the reference splits the subject whole).
func FuzzParseAckReply(f *testing.F) {
	f.Add("$JS.ACK.TASKS.workers.3.1042.977.1764669600000000005.12")
	f.Add("$JS.ACK._.H.TASKS.workers.1.7.7.1764669600000000005.0.rnd")
	f.Add("$JS.ACK..")
	f.Fuzz(func(t *testing.T, reply string) {
		got, ok := parseAckReply(reply)
		if !ok {
			return
		}
		tok := strings.Split(strings.TrimPrefix(reply, "$JS.ACK."), ".")
		var nums []string
		switch {
		case len(tok) == 7:
			nums = tok[2:]
		case len(tok) >= 9:
			nums = tok[4:9]
		default:
			t.Fatalf("%q: parsed with %d tokens", reply, len(tok))
		}
		if d, err := strconv.ParseUint(nums[0], 10, 63); err != nil || int(d) != got.delivered {
			t.Fatalf("%q: delivered %d from %q", reply, got.delivered, nums[0])
		}
		if seq, err := strconv.ParseUint(nums[1], 10, 64); err != nil || seq != got.seq {
			t.Fatalf("%q: seq %d from %q", reply, got.seq, nums[1])
		}
	})
}
