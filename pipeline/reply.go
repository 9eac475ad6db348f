package pipeline

import (
	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
)

// ReplyRules returns the Task-Reply-To rules of a worker on topology t:
// the allow patterns (nil: task.DefaultReplySubjects), and never the
// subjects of task.NeverReply, the worker's and operator's inboxes, the
// admin plane or Breakwater's own streams,
// with and without t's prefix (another deployment may share the server).
func ReplyRules(t bus.Topology, allow []string) (*task.ReplyRules, error) {
	own := []string{"tasks.>", "results.>", "dlq.>", "health.>", "schedules.>", "breakwater.>"}
	// The worker's and the operator's own inboxes: a reply there would be
	// taken for the answer to one of their requests.
	deny := []string{bus.WorkerInboxPrefix + ".>", bus.OperatorInboxPrefix + ".>"}
	deny = append(deny, own...)
	if t.Prefix != "" {
		for _, s := range own {
			deny = append(deny, t.Prefix+"."+s)
		}
	}
	return task.NewReplyRules(allow, deny)
}
