package resilience

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/breakwater/breakwater/handlers"
)

// ErrInvalidResult marks a backend answer that failed the route's
// validation. It counts as that backend's (transient) failure, so the call
// is retried or falls over; a task whose every answer was invalid is
// dead-lettered as invalid_result.
var ErrInvalidResult = errors.New("invalid result")

// Validator checks a backend's answer before it counts as a success.
type Validator interface {
	Validate(body []byte) error
}

// NewValidator returns the validator of a route: the JSON Schema in
// schemaFile (which implies requireJSON), or only "is JSON". It returns nil
// when neither is asked for.
func NewValidator(schemaFile string, requireJSON bool) (Validator, error) {
	if schemaFile == "" {
		if requireJSON {
			return jsonValidator{}, nil
		}
		return nil, nil
	}
	c := jsonschema.NewCompiler()
	sch, err := c.Compile(schemaFile)
	if err != nil {
		return nil, fmt.Errorf("json schema %s: %w", schemaFile, err)
	}
	return schemaValidator{sch}, nil
}

type jsonValidator struct{}

func (jsonValidator) Validate(body []byte) error {
	if !json.Valid(body) {
		return errors.New("answer is not JSON")
	}
	return nil
}

type schemaValidator struct{ s *jsonschema.Schema }

func (v schemaValidator) Validate(body []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	if err := v.s.Validate(doc); err != nil {
		return fmt.Errorf("answer does not match the schema: %w", err)
	}
	return nil
}

// invalid wraps a validation failure as a transient backend error that
// errors.Is recognises as ErrInvalidResult.
func invalid(err error) error {
	return handlers.Transient(fmt.Errorf("%w: %w", ErrInvalidResult, err))
}
