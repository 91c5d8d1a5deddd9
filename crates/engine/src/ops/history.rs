//! A record's story: the change log the engine keeps with every write.
