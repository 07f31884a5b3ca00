package mxhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// DefaultBodyLimit bounds JSON request bodies of the client API. Events are
// limited to 64 KiB by the spec; other bodies (filters, account data, device
// lists) stay well below this.
const DefaultBodyLimit = 1 << 20

// ReadBody reads the whole request body, at most limit bytes.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, TooLarge("Request body too large (limit %d bytes)", limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, BadJSON("Could not read request body")
	}
	if int64(len(body)) > limit {
		return nil, TooLarge("Request body too large (limit %d bytes)", limit)
	}
	return body, nil
}

// DecodeJSON reads a JSON object from the request body into v. An absent or
// unparsable body is M_NOT_JSON; valid JSON of the wrong shape is M_BAD_JSON;
// an oversized body is M_TOO_LARGE.
func DecodeJSON(r *http.Request, limit int64, v any) error {
	body, err := ReadBody(r, limit)
	if err != nil {
		return err
	}
	return Unmarshal(body, v)
}

// DecodeOptionalJSON is DecodeJSON for endpoints whose body may be omitted.
func DecodeOptionalJSON(r *http.Request, limit int64, v any) error {
	body, err := ReadBody(r, limit)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return Unmarshal(body, v)
}

// Unmarshal decodes a JSON object body into v with Matrix error semantics.
func Unmarshal(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return NotJSON("Request body is empty; expected a JSON object")
	}
	if !json.Valid(trimmed) {
		return NotJSON("Request body is not valid JSON")
	}
	if trimmed[0] != '{' {
		return BadJSON("Request body must be a JSON object")
	}
	// NUL cannot be stored in PostgreSQL text, and no Matrix identifier or
	// name needs it.
	if bytes.Contains(trimmed, []byte(`\u0000`)) {
		return BadJSON("Request body contains a NUL character")
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return BadJSON("Field %q has the wrong type: expected %s", te.Field, te.Type.String())
		}
		return BadJSON("Request body has the wrong shape: %v", err)
	}
	return nil
}
