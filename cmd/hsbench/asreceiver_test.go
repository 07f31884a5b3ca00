package main

import (
	"testing"
)

func arr(stream string, seqs ...int) []Arrival {
	var out []Arrival
	for _, s := range seqs {
		out = append(out, Arrival{Stream: stream, Seq: s})
	}
	return out
}

func TestCheckOrder(t *testing.T) {
	sent := map[string]int{"a": 4, "b": 2}
	cat := func(parts ...[]Arrival) []Arrival {
		var out []Arrival
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		got  []Arrival
		want CheckReport
	}{
		{"complete, streams interleaved", cat(arr("a", 0, 1), arr("b", 0), arr("a", 2, 3), arr("b", 1)), CheckReport{Received: 6}},
		{"duplicate", cat(arr("a", 0, 1, 1, 2, 3), arr("b", 0, 1)), CheckReport{Received: 7, Duplicates: 1}},
		{"gap", cat(arr("a", 0, 1, 3), arr("b", 0, 1)), CheckReport{Received: 5, Missing: 1}},
		{"missing tail and stream", arr("a", 0, 1), CheckReport{Received: 2, Missing: 4}},
		{"reordered", cat(arr("a", 0, 2, 1, 3), arr("b", 1, 0)), CheckReport{Received: 6, Reordered: 2}},
		{"unexpected", cat(arr("a", 0, 1, 2, 3, 4), arr("b", 0, 1), arr("c", 0)), CheckReport{Received: 8, Unexpected: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckOrder(sent, tc.got)
			if got != tc.want {
				t.Errorf("CheckOrder = %+v, want %+v", got, tc.want)
			}
			if got.OK() != (tc.want == CheckReport{Received: tc.want.Received}) {
				t.Errorf("OK() = %v", got.OK())
			}
		})
	}
}
