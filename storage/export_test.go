package storage

// HoldConnections takes every slot of db's pools, as that many requests
// busy on the database would, until release.
func HoldConnections(db *DB) (release func()) {
	pools := []*pool{db.w}
	if db.r != db.w {
		pools = append(pools, db.r)
	}
	for _, p := range pools {
		for range cap(p.slots) {
			p.slots <- struct{}{}
		}
	}
	return func() {
		for _, p := range pools {
			for range cap(p.slots) {
				<-p.slots
			}
		}
	}
}
