package rooms

// HoldWrites takes the write lock as a batch's writer would, so that a
// test can line events up behind it: queued counts those waiting, and
// release lets them be written, as one batch.
func (s *Service) HoldWrites() (queued func() int, release func()) {
	s.write.Lock()
	queued = func() int {
		s.queueMu.Lock()
		defer s.queueMu.Unlock()
		return len(s.queue)
	}
	return queued, s.write.Unlock
}
