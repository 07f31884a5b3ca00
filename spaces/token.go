package spaces

import (
	"encoding/base64"
	"encoding/json"

	"homeserver/mxhttp"
)

// pageToken is the opaque next_batch of a hierarchy page. It holds the
// walk's parameters and how many rooms the pages before returned, rather
// than a session kept in memory, so that any process of a deployment can
// serve the next page: the walk is done again and that many rooms skipped.
type pageToken struct {
	RoomID        string `json:"r"`
	SuggestedOnly bool   `json:"s,omitempty"`
	MaxDepth      int    `json:"d"`
	Offset        int    `json:"o"`
}

func (t pageToken) String() string {
	data, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(data)
}

func parsePageToken(s string) (pageToken, error) {
	var t pageToken
	data, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(data, &t) != nil || t.RoomID == "" || t.Offset <= 0 || t.MaxDepth < 0 {
		return pageToken{}, mxhttp.InvalidParam("Invalid pagination token %q", s)
	}
	return t, nil
}
