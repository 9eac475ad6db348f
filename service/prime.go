package service

import (
	"maps"
	"slices"
	"strings"

	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/tracing"
)

// knownLabels are the label values the worker's metrics are exported with
// from the start (tracing.Metrics.Prime): the config's task types and
// backends, every outcome and every DLQ reason.
func knownLabels(cfg *config.Config) tracing.Known {
	var types []string
	for _, t := range slices.Sorted(maps.Keys(cfg.Routes)) {
		if !strings.ContainsAny(t, "*>") { // a pattern is not a type
			types = append(types, t)
		}
	}
	reasons := make([]string, 0, len(dlq.Reasons()))
	for _, r := range dlq.Reasons() {
		reasons = append(reasons, string(r))
	}
	return tracing.Known{
		Types:        types,
		TaskOutcomes: []string{pipeline.OutcomeDone, pipeline.OutcomeDeadLettered, pipeline.OutcomeRedelivered, pipeline.OutcomeDuplicate},
		Backends:     slices.Sorted(maps.Keys(cfg.Backends)),
		CallOutcomes: []string{dlq.ClassOK, dlq.ClassTransient, dlq.ClassPermanent, dlq.ClassInvalid}, // dlq.ClassOf
		Reasons:      reasons,
	}
}
