// Package pdu is the homeserver's only view of room events (persistent data
// units): their formats per room version, canonical JSON, content and
// reference hashes, ed25519 signatures, redaction, the authorisation rules and
// state resolution.
//
// Everything here is a pure function of its inputs: no I/O, no logging, no
// mutable global state. The event layouts, the auth rules and state
// resolution are delegated to github.com/matrix-org/gomatrixserverlib
// (GMSL); this package is the only one allowed to import it, so its types
// never leak into the rest of the server and it can be replaced without
// touching callers. The parts that decide what bytes are hashed and signed
// (canonical JSON, redaction, event IDs, signing) are implemented here
// against the spec's test vectors, because GMSL deviates from the spec in a
// few corners (see redact.go and canonical.go) and every server in a room
// must agree on those bytes exactly. State resolution for room version 12 is
// implemented here too, because GMSL's cannot handle it (see
// stateres_v2.go).
//
// GMSL panics on some malformed input (invalid room IDs, missing create
// events, ...). Every exported function that calls into it recovers and
// returns an error instead, so that one bad event received over federation
// cannot crash the server.
package pdu
