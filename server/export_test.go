package server

// SetTimeouts replaces the timeouts of the listeners served from now on, so
// that tests need not wait for the real ones.
func (s *Server) SetTimeouts(t Timeouts) { s.timeouts = t }
