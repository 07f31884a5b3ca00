package mxhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"
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
// Error messages name the offending field and the JSON type it needs, and
// never quote the input or the Go types behind it.
func Unmarshal(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return NotJSON("Request body is empty; expected a JSON object")
	}
	// encoding/json would turn invalid UTF-8 into U+FFFD; JSON text must
	// be UTF-8 (RFC 8259), and what we store is signed and sent on as is.
	if !utf8.Valid(trimmed) {
		return NotJSON("Request body is not valid UTF-8")
	}
	if !json.Valid(trimmed) {
		return NotJSON("Request body is not valid JSON")
	}
	if trimmed[0] != '{' {
		return BadJSON("Request body must be a JSON object")
	}
	// NUL cannot be stored in PostgreSQL text, and no Matrix identifier or
	// name needs it.
	if hasEscapedNUL(trimmed) {
		return BadJSON("Request body contains a NUL character")
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		return decodeError(err)
	}
	return nil
}

// hasEscapedNUL reports whether valid JSON text holds the escape \u0000
// (a raw NUL cannot be in valid JSON); an escaped backslash followed by
// "u0000" is text, not the escape.
func hasEscapedNUL(b []byte) bool {
	esc := []byte(`\u0000`)
	for i := 0; ; {
		j := bytes.Index(b[i:], esc)
		if j < 0 {
			return false
		}
		j += i
		slashes := 0
		for k := j - 1; k >= 0 && b[k] == '\\'; k-- {
			slashes++
		}
		if slashes%2 == 0 {
			return true
		}
		i = j + 1
	}
}

// maxFieldInMessage bounds the field path quoted in an error message: the
// path is built from the request's keys.
const maxFieldInMessage = 100

// decodeError turns an encoding/json error about the body's shape into a
// short M_BAD_JSON.
func decodeError(err error) error {
	var me *Error
	if errors.As(err, &me) {
		// A type's own UnmarshalJSON already said what is wrong.
		return me
	}
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return BadJSON("Request body has the wrong shape")
	}
	got, _, _ := strings.Cut(te.Value, " ") // "number 1e999": the kind, not the input
	if got == "bool" {
		got = "boolean"
	}
	want := jsonType(te.Type)
	if te.Field == "" {
		return BadJSON("Request body has the wrong shape: found %s where %s was expected", article(got), article(want))
	}
	field := te.Field
	if len(field) > maxFieldInMessage {
		field = strings.ToValidUTF8(field[:maxFieldInMessage], "") + "…"
	}
	if got == want {
		// A number the field cannot hold: a fraction, or out of range.
		if k := te.Type.Kind(); k != reflect.Float32 && k != reflect.Float64 {
			return BadJSON("Field %q must be an integer within range", field)
		}
		return BadJSON("Field %q is out of range", field)
	}
	return BadJSON("Field %q must be %s, not %s", field, article(want), article(got))
}

// article prefixes a JSON type's name with its indefinite article.
func article(kind string) string {
	if kind == "object" || kind == "array" {
		return "an " + kind
	}
	return "a " + kind
}

// jsonType names the JSON type a Go type is decoded from.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "string" // []byte is base64
		}
		return "array"
	case reflect.Array:
		return "array"
	default:
		return "object"
	}
}
