# Times lme4 on the data written by benchmarks/bench_lmm.py and writes its estimates.
# Usage: Rscript lme4_bench.R DATA.csv OUT.csv [LMM_FORMULA GLMM_FORMULA]
# Fits (each once, elapsed seconds from system.time, data reading excluded):
#   lmer(y ~ x + w + (1 + x | g), REML = TRUE)     and
#   glmer(yb ~ x + w + (1 | g), binomial, nAGQ = 1)  -- lme4's default controls for both;
# or the two formulas given (bench_lmm.py --crossed).
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); d$g <- factor(d$g)
if (!is.null(d$h)) d$h <- factor(d$h)
f_lmm <- if (length(args) >= 4) as.formula(args[3]) else y ~ x + w + (1 + x | g)
f_glmm <- if (length(args) >= 4) as.formula(args[4]) else yb ~ x + w + (1 | g)
rows <- list()
add <- function(model, kind, name, value, se = NA) rows[[length(rows) + 1]] <<- data.frame(model = model, kind = kind, name = name, value = value, se = se)
report <- function(m, model, secs) {
  s <- summary(m)$coefficients
  for (i in seq_len(nrow(s))) add(model, "coef", rownames(s)[i], s[i, 1], s[i, 2])
  v <- as.data.frame(VarCorr(m))
  for (i in seq_len(nrow(v))) add(model, "vc", paste(v$grp[i], v$var1[i], v$var2[i], sep = "|"), v$vcov[i])
  add(model, "fit", "logLik", as.numeric(logLik(m)))
  add(model, "fit", "seconds", secs)
}
t1 <- system.time(m1 <- lmer(f_lmm, d, REML = TRUE))[["elapsed"]]
report(m1, "lmm", t1)
t2 <- system.time(m2 <- glmer(f_glmm, d, family = binomial))[["elapsed"]]
report(m2, "glmm", t2)
write.csv(do.call(rbind, rows), args[2], row.names = FALSE, na = "")
