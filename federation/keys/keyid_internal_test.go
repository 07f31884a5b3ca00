package keys

import "testing"

func TestValidKeyID(t *testing.T) {
	for id, ok := range map[string]bool{
		"ed25519:a_1":    true,
		"ed25519:-i_AYA": true, // mautrix-go's random versions are base64url
		"ed25519:":       false,
		"rsa:1":          false,
		"ed25519:a b":    false,
		"ed25519:a/b":    false,
		"ed25519:a:b":    false,
	} {
		if validKeyID(id) != ok {
			t.Errorf("validKeyID(%q) = %v", id, !ok)
		}
	}
}
