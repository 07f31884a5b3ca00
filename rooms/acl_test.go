package rooms

import "testing"

func TestACLAllows(t *testing.T) {
	for _, tc := range []struct {
		content, server string
		want            bool
	}{
		{`{"allow":["*"]}`, "example.org", true},
		{`{"allow":["*"],"deny":["evil.example"]}`, "evil.example", false},
		{`{"allow":["*"],"deny":["*.evil.example"]}`, "sub.evil.example", false},
		{`{"allow":["*"],"deny":["*.evil.example"]}`, "evil.example", true},
		{`{"allow":["*"],"deny":["EVIL.example"]}`, "evil.EXAMPLE:8448", false},
		{`{"allow":["good.example"]}`, "other.example", false},
		{`{"allow":["?ood.example"]}`, "good.example", true},
		{`{}`, "anyone.example", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "1.2.3.4", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{`{"allow":["*"],"allow_ip_literals":"no"}`, "1.2.3.4", true},
		{`{"allow":["*"]}`, "1.2.3.4:80", true},
		{`{"allow":[5,"*"],"deny":[null]}`, "example.org", true},
		{`not json`, "example.org", false},
	} {
		if got := ACLAllows([]byte(tc.content), tc.server); got != tc.want {
			t.Errorf("ACL %s, server %s: %v, want %v", tc.content, tc.server, got, tc.want)
		}
	}
	for _, tc := range []struct {
		p, v string
		want bool
	}{{"a*b", "axxb", true}, {"a*b", "axxc", false}, {"*", "", true}, {"?", "", false}, {"a**", "a", true}, {"*a*b", "xaxb", true}} {
		if got := globMatch(tc.p, tc.v); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.p, tc.v, got)
		}
	}
}
