//go:build fedinterop

package fedinterop_test

import (
	"time"

	"go.mau.fi/util/jsontime"
)

func jsontimeNow() jsontime.UnixMilli { return jsontime.UnixMilli{Time: time.Now()} }
