package pipeline

import (
	"strconv"
	"strings"
	"time"
)

// ackMeta is what the worker needs of a delivery's JetStream metadata:
// the task's stream sequence, which delivery this is, and when the task
// was stored.
type ackMeta struct {
	seq       uint64
	delivered int
	stored    time.Time
}

// parseAckReply reads ackMeta from a delivery's reply subject,
// "$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>"
// or the form with a domain and account hash ahead of the stream (and
// possibly a token after the pending count). It is jetstream.Msg.Metadata
// without the allocations: the worker reads it for every task, and the
// library's parse (a token slice, a metadata struct, three strings) cost
// ~5 % of the worker's CPU on a backlog drain. ok is false for any subject
// that is not such a reply.
func parseAckReply(reply string) (m ackMeta, ok bool) {
	rest, found := strings.CutPrefix(reply, "$JS.ACK.")
	if !found {
		return ackMeta{}, false
	}
	// The tokens after "$JS.ACK.": 7 in the old form, 9 or more in the
	// new (the library ignores any beyond the ninth, and so does this).
	var tok [9]string
	n := strings.Count(rest, ".") + 1
	for i := range min(n, len(tok)) {
		tok[i], rest, _ = strings.Cut(rest, ".")
	}
	var nums []string // delivered, stream seq, consumer seq, ns, pending
	switch {
	case n == 7:
		nums = tok[2:7]
	case n >= 9:
		nums = tok[4:9]
	default:
		return ackMeta{}, false
	}
	delivered, err1 := strconv.ParseUint(nums[0], 10, 63)
	seq, err2 := strconv.ParseUint(nums[1], 10, 64)
	ns, err3 := strconv.ParseInt(nums[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || delivered > 1<<31 {
		return ackMeta{}, false
	}
	return ackMeta{seq: seq, delivered: int(delivered), stored: time.Unix(0, ns)}, true
}
