package config_test

import (
	"errors"
	"fmt"

	"github.com/breakwater/breakwater/config"
)

func ExampleParse() {
	_, err := config.Parse("worker.yaml", []byte(`
worker:
  concurency: 8
backends:
  flow:
    http: {url: http://127.0.0.1:8081/run}
    retry:
      max_attempts: 0
routes:
  code.generate: {backends: [flw]}
`))
	fmt.Println(err)
	fmt.Println(errors.Is(err, config.ErrInvalid))

	var first *config.Error
	if errors.As(err, &first) {
		fmt.Println(first.Line, first.Path)
	}
	// Output:
	// worker.yaml:3: worker.concurency: unknown key "concurency", did you mean "concurrency"? (valid keys: concurrency, ack_wait, max_deliver, max_payload, reply_subjects)
	// true
	// 3 worker.concurency
}

func ExampleParse_values() {
	_, err := config.Parse("worker.yaml", []byte(`
backends:
  flow:
    http: {url: http://127.0.0.1:8081/run}
    retry:
      max_attempts: 0
routes:
  code.generate: {backends: [flw]}
`))
	fmt.Println(err)
	// Output:
	// worker.yaml:6: backends.flow.retry.max_attempts: must be at least 1, got 0
	// worker.yaml:8: routes.code.generate.backends[0]: unknown backend "flw", did you mean "flow"? (defined: flow)
}
