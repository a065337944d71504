"""Transport-free chat logic: sessions, sequencing, fan-out, roster."""
