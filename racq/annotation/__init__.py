"""Human feedback: the candidate pool (pool), votes into ratings (rating, standings = the leaderboard),
feedback rounds of DPO from votes (retrain), preference exports (prefs, datacard) and study files (study)."""
