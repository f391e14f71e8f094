//! `sprout bench serve`: a load tester for OpenAI-compatible servers.
