package transport_test

import (
	"testing"

	"homeserver/federation/transport"
)

// FuzzParseXMatrix checks that header parsing never panics and round-trips:
// a parsed header formats (String) to one that parses to the same values,
// and any values with a valid origin survive String then ParseXMatrix.
func FuzzParseXMatrix(f *testing.F) {
	for _, h := range []string{
		`X-Matrix origin="a.test",destination="b.test",key="ed25519:k",sig="ABC+/d"`,
		"x-matrix   SIG=ABC+/d= ,\tKey=ed25519:k , Origin=a.test:8448",
		`X-Matrix origin="[::1]:8448",key="ed25519:k",sig="a\"b\\c"`,
		`X-Matrix origin="a.test",key="ed25519:k",signature="xyz",unknown="ignored",other=x`,
		`X-Matrix origin = "a.test" ,, key="ed25519:k",sig="s",`,
		`X-Matrix origin="a.test",key="ed25519:k",sig="s\`,
		`X-Matrix origin="a.test",destination="",key="\u00e9",sig="",signature="x"`,
		`X-Matrix origin=a.test,key=k,sig=s,sig=t`,
		"X-Matrix\torigin=a.test,key=\"\x00\xff\",sig=s",
	} {
		f.Add(h, "b.test", "ed25519:k", "sig")
	}
	f.Fuzz(func(t *testing.T, header, dest, key, sig string) {
		if x, err := transport.ParseXMatrix(header); err == nil {
			back, err := transport.ParseXMatrix(x.String())
			if err != nil || back != x {
				t.Fatalf("ParseXMatrix(%q) = %+v, formatted %q, parsed again %+v, %v", header, x, x.String(), back, err)
			}
		}
		x := transport.XMatrix{Origin: "a.test", Destination: dest, Key: key, Sig: sig}
		if x.Key == "" || x.Sig == "" {
			return
		}
		back, err := transport.ParseXMatrix(x.String())
		if err != nil || back != x {
			t.Fatalf("%+v formatted as %q parsed to %+v, %v", x, x.String(), back, err)
		}
	})
}
