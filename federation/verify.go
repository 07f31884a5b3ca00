package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	"homeserver/pdu"
)

// KeyRing gives other servers' public keys, fetching them when needed.
type KeyRing interface {
	// VerifyKey returns serverName's key keyID as valid at atTS
	// (milliseconds).
	VerifyKey(ctx context.Context, serverName, keyID string, atTS int64) (ed25519.PublicKey, error)
}

// parsePDU reads a PDU received from another server and checks it as the
// spec's "Checks performed on receipt of a PDU" ask, up to the auth rules:
// a valid event of the room version, within the size limit, signed by
// every server that must sign it. An event whose content hash does not
// match is kept in its redacted form, as the spec says.
func (s *Service) parsePDU(ctx context.Context, version string, raw json.RawMessage) (*pdu.Event, error) {
	return s.parsePDUSigned(ctx, version, raw, "")
}

// parsePDUSigned is parsePDU without the signature of unsigned, a server
// that is yet to sign the event: this one, as the authorising server of a
// restricted join at send_join.
func (s *Service) parsePDUSigned(ctx context.Context, version string, raw json.RawMessage, unsigned string) (*pdu.Event, error) {
	if len(raw) > pdu.MaxPDUSize {
		return nil, fmt.Errorf("event is %d bytes, more than %d", len(raw), pdu.MaxPDUSize)
	}
	ev, _, err := pdu.ParseReceived(version, raw)
	if err != nil {
		return nil, err
	}
	if err := s.checkSignatures(ctx, ev, unsigned); err != nil {
		return nil, err
	}
	return ev, nil
}

// checkSignatures checks that every server that must sign ev has, with a
// key valid when the event was sent.
func (s *Service) checkSignatures(ctx context.Context, ev *pdu.Event, unsigned string) error {
	for _, server := range pdu.SigningServers(ev) {
		if server == unsigned && server != serverOf(ev.Sender()) {
			continue
		}
		if server == "" {
			return errors.New("event has no sender server")
		}
		ids := pdu.SignatureKeyIDs(ev, server)
		if len(ids) == 0 {
			return fmt.Errorf("event %s is not signed by %s", ev.ID(), server)
		}
		var last error
		ok := false
		for _, id := range ids {
			key, err := s.keys.VerifyKey(ctx, server, id, ev.OriginServerTS())
			if err != nil {
				last = err
				continue
			}
			if err := pdu.VerifySignature(ev, server, id, key); err != nil {
				last = err
				continue
			}
			ok = true
			break
		}
		if !ok {
			return fmt.Errorf("signature of %s on %s: %w", server, ev.ID(), last)
		}
	}
	return nil
}
