package pdu

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

// FuzzCanonicalJSON checks the properties every hash and signature relies
// on: canonical output is valid JSON with the input's meaning, a fixed point
// of CanonicalJSON, and everything ValidateJSON accepts has a canonical form.
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `null`, `true`, `0`, `-0`, `"x"`,
		`{"b":1,"a":[1,2,{"d":null,"c":false}]}`,
		`{"one": 1, "two": "Two"}`,
		`{"a":"日本語","\u00e9":"\u0000\u001f\"\\\/\b\f\n\r\t"}`,
		`{"emoji":"\ud83d\ude00","ls":"\u2028"}`,
		`[1e10, 2.0, -0.0, 1E+2, 0.5e1, 123456789012345e1, 9007199254740991]`,
		`[1e1000000000, 1e-7, 12345678901234567890]`,
		`{"a":1,"a":2}`,
		`"\ud800"`, `"\udc00\ud800"`,
		` { "x" : [ ] } `,
		`{"x":1} {"y":2}`,
		"\"\xff\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		canon, err := CanonicalJSON(data)
		if verr := ValidateJSON(data); verr == nil && err != nil {
			t.Fatalf("ValidateJSON accepts %q but CanonicalJSON fails: %v", data, err)
		}
		if err != nil {
			return
		}
		if !json.Valid(canon) {
			t.Fatalf("CanonicalJSON(%q) = %q, not valid JSON", data, canon)
		}
		again, err := CanonicalJSON(canon)
		if err != nil {
			t.Fatalf("CanonicalJSON of its own output %q: %v", canon, err)
		}
		if !bytes.Equal(again, canon) {
			t.Fatalf("not idempotent:\n in %q\nout %q\nthen %q", data, canon, again)
		}
		in, err := decodeNumbers(data)
		if err != nil {
			t.Fatalf("CanonicalJSON accepted %q, which encoding/json rejects: %v", data, err)
		}
		out, err := decodeNumbers(canon)
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(in, out) {
			t.Fatalf("meaning changed:\n in %q\nout %q", data, canon)
		}
	})
}

// decodeNumbers decodes data keeping numbers as their literals, since
// integers outside float64's range are kept by CanonicalJSON.
func decodeNumbers(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// sameJSON compares decoded JSON values; numbers are equal when their
// literals are, or when both parse to the same finite float64 ("1e10" and
// "10000000000", "-0" and "0").
func sameJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, errX := strconv.ParseFloat(string(x), 64)
		fy, errY := strconv.ParseFloat(string(y), 64)
		return errX == nil && errY == nil && fx == fy
	}
	return a == b
}
