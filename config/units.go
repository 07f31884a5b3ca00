package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes. In YAML it is either an integer number of bytes
// or a string with an optional K, M, G or T suffix (powers of 1024), as in
// Synapse: 512, "512", "10K", "50M", "1G".
type ByteSize int64

var byteUnits = []struct {
	suffix byte
	size   int64
}{
	{'T', 1 << 40},
	{'G', 1 << 30},
	{'M', 1 << 20},
	{'K', 1 << 10},
}

// ParseByteSize parses a size as written in the configuration file.
func ParseByteSize(s string) (ByteSize, error) {
	num, mult := s, int64(1)
	if s != "" {
		last := s[len(s)-1] &^ 0x20 // ASCII upper case, so "50m" works too
		for _, u := range byteUnits {
			if last == u.suffix {
				num, mult = s[:len(s)-1], u.size
				break
			}
		}
	}
	n, ok := parseUint(num)
	if !ok || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid size: want a number or a string like \"50M\", got %s", describe(n))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// String formats b the way the configuration file would write it.
func (b ByteSize) String() string {
	if b != 0 {
		for _, u := range byteUnits {
			if int64(b)%u.size == 0 {
				return strconv.FormatInt(int64(b)/u.size, 10) + string(u.suffix)
			}
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Duration is a length of time. In YAML it is either an integer number of
// milliseconds (Synapse's unit) or a string with a suffix ms, s, m, h, d, w or
// y: "500ms", "30s", "5m", "1h", "2d", "1w", "1y". A string without a suffix
// is milliseconds too.
type Duration time.Duration

var durationUnits = []struct {
	suffix string
	size   time.Duration
}{
	// "ms" must come before "m" and "s" so that "500ms" is not read as "500m" + "s".
	{"ms", time.Millisecond},
	{"s", time.Second},
	{"m", time.Minute},
	{"h", time.Hour},
	{"d", 24 * time.Hour},
	{"w", 7 * 24 * time.Hour},
	{"y", 365 * 24 * time.Hour},
}

// ParseDuration parses a duration as written in the configuration file.
func ParseDuration(s string) (Duration, error) {
	num, unit := s, time.Millisecond
	for _, u := range durationUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, unit = strings.TrimSuffix(s, u.suffix), u.size
			break
		}
	}
	n, ok := parseUint(num)
	if !ok || n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return Duration(time.Duration(n) * unit), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid duration: want milliseconds or a string like \"5m\", got %s", describe(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// String formats d as a Go duration, e.g. "5m0s".
func (d Duration) String() string { return time.Duration(d).String() }

// parseUint accepts plain decimal digits only: no sign, spaces or
// underscores, so that typos are reported rather than guessed at.
func parseUint(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// NameList is a list of names that may also be written as one name.
type NameList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *NameList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*l = nil
			return nil
		}
		*l = NameList{n.Value}
		return nil
	case yaml.SequenceNode:
		var names []string
		if err := n.Decode(&names); err != nil {
			return fmt.Errorf("want a name or a list of names: %v", err)
		}
		*l = names
		return nil
	}
	return fmt.Errorf("want a name or a list of names, got %s", describe(n))
}

// Contains reports whether name is in the list.
func (l NameList) Contains(name string) bool {
	for _, n := range l {
		if n == name {
			return true
		}
	}
	return false
}
