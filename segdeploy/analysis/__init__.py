"""Analysis of a study's rows: statistics over folds and images (stats), the grid aggregated (aggregate), the
study's answer and tables (summary), cost per configuration (cost), the published accuracy of the reference study
(published) and the rows' adapter (rows). It reads results files; it runs nothing."""
