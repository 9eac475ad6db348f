package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// A config file without routes starts, but says at once that it will
// serve nothing.
func TestEmptyConfigWarns(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", "worker: {concurrency: 4}\n")
	w := startWorker(t, s, "--config", cfg)
	testkit.Eventually(t, 10*time.Second, "the no-routes warning", func() (bool, string) {
		return strings.Contains(w.Stderr(), "the config has no routes"), w.Stderr()
	})
}
