# lme4 side of benchmarks/bench_structures.py:  Rscript structures_bench.R DATA.csv OUT.csv LAYOUT MODEL...
# Crossed: lmer / glmer with default controls. Multiple membership: lme4's modular interface with
# the weighted membership matrix as Zt (as tests/fixtures/lme4/make_membership.R), default controls.
suppressMessages({library(lme4); library(Matrix)})
a <- commandArgs(TRUE); d <- read.csv(a[1]); layout <- a[3]; models <- a[-(1:3)]
res <- data.frame(model=character(0), seconds=numeric(0), loglik=numeric(0))
if (layout == "crossed") {
  for (m in models) {
    t <- system.time(fit <- if (m == "lmm") lmer(y ~ x + (1 | school) + (1 | nbhd), d)
                             else glmer(yb ~ x + (1 | school) + (1 | nbhd), d, family=binomial))[["elapsed"]]
    res[nrow(res) + 1, ] <- list(m, t, as.numeric(logLik(fit)))
  }
} else {
  lv <- sort(unique(na.omit(c(d$s1, d$s2, d$s3))))
  d$grp <- factor(rep(lv, length.out=nrow(d)), levels=lv)
  zt <- function() {
    i <- integer(0); j <- integer(0); x <- numeric(0)
    for (c in 1:3) { s <- d[[paste0("s", c)]]; w <- d[[paste0("w", c)]]; ok <- which(!is.na(s) & w > 0)
      i <- c(i, match(s[ok], lv)); j <- c(j, ok); x <- c(x, w[ok]) }
    sparseMatrix(i=i, j=j, x=x, dims=c(length(lv), nrow(d)))
  }
  swap <- function(mod) { Zt <- zt(); dimnames(Zt) <- dimnames(mod$reTrms$Zt); mod$reTrms$Zt <- Zt; mod$reTrms$Ztlist[[1]] <- Zt; mod }
  for (m in models) {
    t <- system.time(if (m == "lmm") {
      lf <- swap(lFormula(y ~ x + (1 | grp), d)); devfun <- do.call(mkLmerDevfun, lf)
      fit <- mkMerMod(environment(devfun), optimizeLmer(devfun), lf$reTrms, fr=lf$fr)
    } else {
      gf <- swap(glFormula(yb ~ x + (1 | grp), d, family=binomial)); devfun <- do.call(mkGlmerDevfun, gf)
      opt <- optimizeGlmer(devfun, nAGQ=0); devfun <- updateGlmerDevfun(devfun, gf$reTrms, nAGQ=1)
      opt <- optimizeGlmer(devfun, stage=2)
      fit <- mkMerMod(environment(devfun), opt, gf$reTrms, fr=gf$fr)
    })[["elapsed"]]
    res[nrow(res) + 1, ] <- list(m, t, as.numeric(logLik(fit)))
  }
}
write.csv(res, a[2], row.names=FALSE)
