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
	return tracing.Known{
		Types:        types,
		TaskOutcomes: labels(pipeline.Outcomes()),
		Backends:     slices.Sorted(maps.Keys(cfg.Backends)),
		CallOutcomes: labels(dlq.Classes()), // dlq.ClassOf
		Reasons:      labels(dlq.Reasons()),
	}
}

// labels spells typed values as the metric label values they are.
func labels[S ~string](vs []S) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}
