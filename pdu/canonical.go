package pdu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// We implement canonical JSON ourselves rather than using GMSL's because
// GMSL's keeps exponent forms ("1e10" stays "1e10" where the spec's own
// example wants 10000000000), passes fractions and duplicate keys through, and
// silently drops lone UTF-16 surrogate escapes. Every byte here feeds a hash
// or a signature, so it follows the grammar in the spec's appendix exactly,
// and rejects what has no canonical form.

// numberMode says what to do with numbers that are not plain integers in
// the safe range.
type numberMode int

const (
	// numbersCanonical normalises integral values written with a fraction or
	// exponent ("1e10", "2.0") to plain integers and rejects everything
	// else that is not an integer. Plain integer literals outside the safe
	// range are kept: events from room versions 1-5 may hold them and must
	// still hash the same as on the server that sent them.
	numbersCanonical numberMode = iota
	// numbersLegacy is numbersCanonical, but non-integers are kept
	// verbatim instead of rejected, because events in room versions 1-5
	// may contain floats.
	numbersLegacy
	// numbersStrict accepts only integer literals in [-(2^53)+1, 2^53-1]:
	// what room versions 6 and later allow in events.
	numbersStrict
)

const (
	maxSafeInteger = 1<<53 - 1
	// maxNesting bounds recursion so hostile input cannot exhaust the
	// stack; Matrix events are never remotely this deep.
	maxNesting = 1000
)

// CanonicalJSON returns the canonical encoding of data: no insignificant
// whitespace, object keys sorted by Unicode code point, the shortest string
// escapes, and integers written as plain decimals (so -0 becomes 0 and 1e10
// becomes 10000000000). It fails on invalid JSON, duplicate object keys
// (whose meaning differs between parsers) and non-integer numbers, which
// canonical JSON cannot represent.
func CanonicalJSON(data []byte) ([]byte, error) {
	return canonicalJSON(data, numbersCanonical)
}

// ValidateJSON reports whether data can be held in an event of room version
// 6 or later: it must be valid UTF-8 JSON without floats (including exponent
// forms such as 1e10), without integers outside [-(2^53)+1, 2^53-1], and
// without duplicate object keys. The error names the problem and where it is.
func ValidateJSON(data []byte) error {
	_, err := canonicalJSON(data, numbersStrict)
	return err
}

func canonicalJSON(data []byte, mode numberMode) ([]byte, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("pdu: invalid JSON: not valid UTF-8")
	}
	if err := checkSurrogateEscapes(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	c := canonicaliser{dec: dec, mode: mode}
	out, err := c.value(nil, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("pdu: invalid JSON: unexpected data after the top-level value")
	}
	return out, nil
}

// checkSurrogateEscapes rejects \u escapes of UTF-16 surrogates that do not
// form a pair. They stand for no character, so there is nothing to write in
// UTF-8 (encoding/json would quietly substitute U+FFFD, and other servers
// reject them).
func checkSurrogateEscapes(data []byte) error {
	// A backslash can only occur inside a string in valid JSON, and always
	// starts an escape, so escapes can be found without tracking strings;
	// anything malformed is left for the decoder to report.
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(data) || data[i] != 'u' {
			continue
		}
		r, ok := hex4(data, i+1)
		i += 4
		switch {
		case !ok || !utf16.IsSurrogate(r):
		case r < 0xdc00 && len(data) > i+2 && data[i+1] == '\\' && data[i+2] == 'u':
			if low, ok := hex4(data, i+3); ok && low >= 0xdc00 && low <= 0xdfff {
				i += 6
				continue
			}
			fallthrough
		default:
			return fmt.Errorf("pdu: invalid JSON: unpaired UTF-16 surrogate \\u%04x", r)
		}
	}
	return nil
}

// hex4 decodes the four hex digits at data[i:].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(data[i:i+4]), 16, 16)
	return rune(n), err == nil
}

type canonicaliser struct {
	dec  *json.Decoder
	mode numberMode
	// path holds the keys and indexes leading to the current value, so
	// errors can say where the problem is.
	path []string
}

func (c *canonicaliser) errorf(format string, args ...any) error {
	where := "$" + strings.Join(c.path, "")
	return fmt.Errorf("pdu: invalid JSON at %s: %s", where, fmt.Sprintf(format, args...))
}

func (c *canonicaliser) token() (json.Token, error) {
	tok, err := c.dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("pdu: invalid JSON: %w", err)
	}
	return tok, nil
}

// value reads one JSON value from the decoder and appends its canonical form
// to out.
func (c *canonicaliser) value(out []byte, depth int) ([]byte, error) {
	tok, err := c.token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= maxNesting {
			return nil, c.errorf("nested more than %d levels deep", maxNesting)
		}
		if t == '{' {
			return c.object(out, depth+1)
		}
		return c.array(out, depth+1)
	case string:
		return appendString(out, t), nil
	case json.Number:
		n, err := canonicalNumber(string(t), c.mode)
		if err != nil {
			return nil, c.errorf("%v", err)
		}
		return append(out, n...), nil
	case bool:
		return strconv.AppendBool(out, t), nil
	case nil:
		return append(out, "null"...), nil
	}
	return nil, c.errorf("unexpected token %v", tok)
}

func (c *canonicaliser) object(out []byte, depth int) ([]byte, error) {
	type member struct {
		key   string
		value []byte
	}
	var members []member
	for c.dec.More() {
		tok, err := c.token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, c.errorf("object key is not a string")
		}
		c.path = append(c.path, pathKey(key))
		v, err := c.value(nil, depth)
		if err != nil {
			return nil, err
		}
		c.path = c.path[:len(c.path)-1]
		members = append(members, member{key, v})
	}
	if _, err := c.token(); err != nil { // the closing '}'
		return nil, err
	}
	// Go compares strings bytewise, and for valid UTF-8 bytewise order is
	// code point order, which is what the spec asks for.
	slices.SortStableFunc(members, func(a, b member) int { return strings.Compare(a.key, b.key) })
	out = append(out, '{')
	for i, m := range members {
		if i > 0 {
			if members[i-1].key == m.key {
				return nil, c.errorf("duplicate key %q", m.key)
			}
			out = append(out, ',')
		}
		out = appendString(out, m.key)
		out = append(out, ':')
		out = append(out, m.value...)
	}
	return append(out, '}'), nil
}

func (c *canonicaliser) array(out []byte, depth int) ([]byte, error) {
	out = append(out, '[')
	for i := 0; c.dec.More(); i++ {
		if i > 0 {
			out = append(out, ',')
		}
		c.path = append(c.path, "["+strconv.Itoa(i)+"]")
		var err error
		if out, err = c.value(out, depth); err != nil {
			return nil, err
		}
		c.path = c.path[:len(c.path)-1]
	}
	if _, err := c.token(); err != nil { // the closing ']'
		return nil, err
	}
	return append(out, ']'), nil
}

// pathKey formats an object key for error paths, in the dotted style used
// for event fields when that is unambiguous.
func pathKey(key string) string {
	if key != "" && !strings.ContainsAny(key, ".[]\"") {
		return "." + key
	}
	return "[" + strconv.Quote(key) + "]"
}

// appendString appends s as a canonical JSON string: only '"', '\' and
// control characters are escaped, using the short forms where JSON has them
// and lowercase \u00XX otherwise. Everything else, including non-ASCII, is
// written as raw UTF-8.
func appendString(out []byte, s string) []byte {
	const hex = "0123456789abcdef"
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b == '"' || b == '\\':
			out = append(out, '\\', b)
		case b >= 0x20:
			out = append(out, b)
		case b == '\b':
			out = append(out, '\\', 'b')
		case b == '\t':
			out = append(out, '\\', 't')
		case b == '\n':
			out = append(out, '\\', 'n')
		case b == '\f':
			out = append(out, '\\', 'f')
		case b == '\r':
			out = append(out, '\\', 'r')
		default:
			out = append(out, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
		}
	}
	return append(out, '"')
}

// canonicalNumber returns the canonical form of the JSON number literal lit
// (already syntax-checked by the decoder) under mode.
func canonicalNumber(lit string, mode numberMode) (string, error) {
	neg := strings.HasPrefix(lit, "-")
	body := strings.TrimPrefix(lit, "-")
	mantissa, exp, hasExp := strings.Cut(strings.ToLower(body), "e")
	intPart, frac, hasFrac := strings.Cut(mantissa, ".")

	if !hasExp && !hasFrac {
		if strings.Trim(intPart, "0") == "" {
			return "0", nil // also turns -0 into 0
		}
		if mode == numbersStrict && !inSafeRange(lit) {
			return "", fmt.Errorf("integer %s is outside [-(2^53)+1, 2^53-1]", lit)
		}
		return lit, nil
	}
	if mode == numbersStrict {
		return "", fmt.Errorf("float %s is not allowed (only integers)", lit)
	}

	// The value is digits × 10^scale. Work on the decimal digits directly so
	// that the result is exact and huge exponents cannot make us allocate.
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return "0", nil
	}
	e := 0
	if hasExp {
		var err error
		e, err = strconv.Atoi(exp)
		if err != nil || e > 1e6 || e < -1e6 {
			// An exponent this large on a non-zero value is either enormous
			// or infinitesimal; neither is an integer we could hold.
			return nonInteger(lit, mode)
		}
	}
	scale := e - len(frac)
	trimmed := strings.TrimRight(digits, "0")
	scale += len(digits) - len(trimmed)
	digits = trimmed
	// 2^53 has 16 decimal digits, so anything longer is out of range.
	if scale < 0 || len(digits)+scale > 16 {
		return nonInteger(lit, mode)
	}
	s := digits + strings.Repeat("0", scale)
	if neg {
		s = "-" + s
	}
	if !inSafeRange(s) {
		return nonInteger(lit, mode)
	}
	return s, nil
}

// nonInteger handles a number canonical JSON cannot write as an integer.
func nonInteger(lit string, mode numberMode) (string, error) {
	if mode == numbersLegacy {
		return lit, nil
	}
	return "", fmt.Errorf("number %s is not an integer in [-(2^53)+1, 2^53-1]", lit)
}

// inSafeRange reports whether the integer literal s is within
// [-(2^53)+1, 2^53-1].
func inSafeRange(s string) bool {
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n >= -maxSafeInteger && n <= maxSafeInteger
}

// object is a decoded JSON object whose values are kept as canonical JSON,
// so it can be edited and re-encoded without reformatting nested values.
type object map[string]json.RawMessage

// parseObject canonicalises data under mode and splits it into its members.
func parseObject(data []byte, mode numberMode) (object, error) {
	canon, err := canonicalJSON(data, mode)
	if err != nil {
		return nil, err
	}
	return splitCanonicalObject(canon)
}

// splitCanonicalObject splits canonical JSON that must be an object. The
// values keep their bytes from the input, so they are canonical too.
func splitCanonicalObject(canon []byte) (object, error) {
	if len(canon) == 0 || canon[0] != '{' {
		return nil, errors.New("pdu: JSON value is not an object")
	}
	var o object
	if err := json.Unmarshal(canon, &o); err != nil {
		return nil, fmt.Errorf("pdu: invalid JSON object: %w", err)
	}
	return o, nil
}

// encode returns o as canonical JSON. It writes the pieces itself because
// encoding/json would escape '<', '>' and '&' inside strings and so break
// canonical form.
func (o object) encode() []byte {
	keys := make([]string, 0, len(o))
	size := 2
	for k, v := range o {
		keys = append(keys, k)
		size += len(k) + len(v) + 4
	}
	slices.Sort(keys)
	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, k := range keys {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendString(out, k)
		out = append(out, ':')
		out = append(out, o[k]...)
	}
	return append(out, '}')
}

// without returns a shallow copy of o lacking the given keys.
func (o object) without(keys ...string) object {
	c := make(object, len(o))
	for k, v := range o {
		c[k] = v
	}
	for _, k := range keys {
		delete(c, k)
	}
	return c
}
